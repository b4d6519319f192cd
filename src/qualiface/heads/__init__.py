"""Margin heads that own the class centres; every head follows :class:`qualiface.heads.base.Head`."""

from qualiface.heads.base import Head, HeadInputs, HeadOutput, MarginTerms
from qualiface.heads.sharding import ShardSpec
from qualiface.registry import import_submodules

import_submodules(__name__, __path__)  # every module registers its heads

__all__ = ["Head", "HeadInputs", "HeadOutput", "MarginTerms", "ShardSpec"]
