"""The tiny training run the head tests share: well-separated clusters and a few SGD steps.

``clustered_data`` draws ``classes`` cluster centres and ``per_class`` noisy points around each (from the global RNG
or a given generator, so each test keeps its own seed); ``fit`` runs ``steps`` optimizer steps of a
``forward() -> HeadOutput`` closure and returns every step's output (loss and logs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from qualiface.heads.base import HeadOutput


def clustered_data(
    classes: int = 4,
    per_class: int = 8,
    dim: int = 16,
    *,
    spread: float = 1.0,
    noise: float = 0.3,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(x (classes·per_class, dim), labels)``: centres ``spread·N(0, 1)``, points ``centre + noise·N(0, 1)``."""
    centres = torch.randn(classes, dim, generator=generator) * spread
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + noise * torch.randn(classes * per_class, dim, generator=generator), labels


def fit(
    forward: Callable[[], HeadOutput],
    optimizer: torch.optim.Optimizer,
    steps: int = 30,
    *,
    clip: tuple[Iterable[Tensor], float] | None = None,
) -> list[HeadOutput]:
    """``steps`` times: ``out = forward()``, backward, optional gradient-norm clip ``(params, max_norm)``, step."""
    outputs = []
    params = None if clip is None else list(clip[0])
    for _ in range(steps):
        out = forward()
        optimizer.zero_grad()
        out.loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip[1])
        optimizer.step()
        outputs.append(out)
    return outputs


def step_losses(outputs: list[HeadOutput]) -> list[float]:
    """The loss of every step."""
    return [out.loss.item() for out in outputs]
