"""A typed call of a custom autograd function (``Function.apply`` carries no annotations in torch's stubs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def apply(function: type[torch.autograd.Function], *args: Any) -> Any:
    """``function.apply(*args)``; the caller annotates what it returns."""
    call: Callable[..., Any] = function.apply
    return call(*args)
