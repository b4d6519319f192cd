"""The tiny training run the head tests share: well-separated clusters and a few SGD steps.

``clustered_data`` draws ``classes`` cluster centres and ``per_class`` noisy points around each (from the global RNG
or a given generator, so each test keeps its own seed); ``fit`` runs ``steps`` optimizer steps of a
``forward() -> HeadOutput`` closure and returns every step's output (loss and logs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qualiface.config import ExperimentConfig, config_from_dict
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


def tiny_config(
    out_dir: Path, *, head: str = "arcface", overrides: tuple[str, ...] = (), **sections: Any
) -> ExperimentConfig:
    """``tiny_cnn`` on 16x16 synthetic faces, 8 identities x 4 images, batch 8, on the CPU in fp32; ``sections``
    update the config's sections, ``overrides`` are ``key=value`` settings applied last."""
    branch = {"cr_fiqa": "cr_fiqa", "scaleface": "scaleface"}.get(head)
    data: dict[str, Any] = {
        "model": {
            "backbone": "tiny_cnn",
            "kwargs": {"input_size": 16, **({"quality_branch": branch} if branch else {})},
        },
        "head": {"name": head},
        "data": {
            "synthetic": {"num_identities": 8, "images_per_identity": 4, "size": 16},
            "batch_size": 8,
            "num_workers": 0,
        },
        "optim": {"lr": 0.05},
        # device cpu: on a CUDA machine too these stay CPU checks (tests/gpu holds the CUDA ones)
        "train": {
            "out_dir": str(out_dir),
            "steps": 6,
            "precision": "fp32",
            "device": "cpu",
            "log_every": 1,
            "checkpoint_every": 100,
        },
        "log": {"progress": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data, list(overrides))
