"""Margin heads that own the class centres; every head follows :class:`qualiface.heads.base.Head`."""

from qualiface.heads import (  # noqa: F401  (registers the heads)
    adaface,
    arcface,
    cosface,
    cr_fiqa,
    magface,
    scaleface,
    softmax,
    unitsface,
)
from qualiface.heads.base import Head, HeadInputs, HeadOutput, MarginSoftmaxHead
from qualiface.heads.sharding import ShardSpec

__all__ = ["Head", "HeadInputs", "HeadOutput", "MarginSoftmaxHead", "ShardSpec"]
