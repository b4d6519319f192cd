"""A tiny backbone for fast training tests: ``tiny_cnn`` (two strided convolutions and a linear).

:func:`registered` adds it to ``qualiface``'s backbone registry for the duration of a ``with`` block (the training
tests use it as a fixture, so the registry contract tests never see it); :func:`register` adds it for the rest of
a process (spawned DDP workers).
``norm=False`` drops every BatchNorm of the backbone, so that a 2-process run can equal a 1-process run exactly
(BatchNorm statistics are per process under DDP). ``quality_branch`` attaches any registered quality branch, as
on the real backbones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.registry import BACKBONES


class TinyCNN(Backbone):
    def __init__(
        self,
        embedding_dim: int = 32,
        input_size: int = 16,
        norm: bool = True,
        quality_branch: str | None = None,
        **quality_options: Any,
    ) -> None:
        super().__init__()
        self.arch = "tiny_cnn"
        self.embedding_dim = embedding_dim
        self.preprocessing = Preprocessing(input_size=(3, input_size, input_size))

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 2, 1, bias=not norm), *([nn.BatchNorm2d(cout)] if norm else []), nn.PReLU()]

        self.features = nn.Sequential(*block(3, 8), *block(8, 16))
        side = input_size // 4
        self.bottleneck_dim = 16 * side * side
        self.fc = nn.Linear(self.bottleneck_dim, embedding_dim)
        self._add_quality_branch(quality_branch, **quality_options)  # any registered branch, as the real backbones

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        return torch.flatten(self.features(images), 1)

    def embed(self, bottleneck: Tensor) -> Tensor:
        return self.fc(bottleneck)


def tiny_cnn(**kwargs: Any) -> TinyCNN:
    return TinyCNN(**kwargs)


def register() -> None:
    """Register ``tiny_cnn`` in this process (idempotent)."""
    if "tiny_cnn" not in BACKBONES:
        BACKBONES.register("tiny_cnn")(tiny_cnn)


@contextmanager
def registered() -> Iterator[None]:
    """``tiny_cnn`` is registered inside the block, and removed after it if it was not there before."""
    present = "tiny_cnn" in BACKBONES
    register()
    try:
        yield
    finally:
        if not present:
            BACKBONES.unregister("tiny_cnn")
