"""``qualiface tour``: a short tour that trains every head for a few steps on toy vectors of synthetic identities."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

import qualiface


def _synthetic(classes: int = 8, per_class: int = 16, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g) * 2
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + 0.7 * torch.randn(len(labels), dim, generator=g), labels


def _train(name: str, images: torch.Tensor, labels: torch.Tensor, steps: int = 40) -> tuple[float, float]:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(images.shape[1], 64), nn.PReLU(), nn.Linear(64, 16))
    branch = nn.Linear(images.shape[1], 1)
    head = qualiface.create_head(name, 16, int(labels.max()) + 1)
    params = [*body.parameters(), *branch.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        emb = body(images)
        side = branch(images).squeeze(1)
        aux = {"quality": side, "scale": 16 + nn.functional.softplus(side)}
        out = head(emb, labels, **{k: aux[k] for k in head.requires})
        optimizer.zero_grad()
        out.loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        losses.append(out.loss.item())
    return losses[0], losses[-1]


@dataclass(frozen=True)
class TourStep:
    """One head's few-step run: the loss of its first and last step and the seconds it took."""

    head: str
    first_loss: float
    last_loss: float
    seconds: float


def run_tour(steps: int = 40) -> Iterator[TourStep]:
    """Train every registered head for ``steps`` steps on toy vectors of 8 synthetic identities (one
    :class:`TourStep` per head, as each finishes)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    images, labels = _synthetic()
    for name in qualiface.list_heads():
        start = time.perf_counter()
        first, last = _train(name, images, labels, steps)
        yield TourStep(name, first, last, time.perf_counter() - start)


def tour_header(steps: int = 40) -> list[str]:
    """The lines printed before the runs: version, registered components, what is trained."""
    _, labels = _synthetic()
    return [
        f"qualiface {qualiface.__version__} (torch {torch.__version__})",
        "backbones: " + ", ".join(qualiface.list_backbones()),
        "quality:   " + ", ".join(qualiface.list_quality()),
        "",
        f"Training every head for {steps} steps on {len(labels)} synthetic samples of {int(labels.max()) + 1} ids:",
    ]
