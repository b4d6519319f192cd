"""Workers for the resharding tests: one rank of a run that stops after a checkpoint, or resumes from one."""

from __future__ import annotations

from typing import Any

import torch

from _helpers.ddp_train_workers import ddp_config
from _helpers.tiny_backbone import register
from qualiface.config import config_from_dict
from qualiface.train import train


class StoppedError(Exception):
    """Raised by :func:`stop_at`'s callback: the run ends as if killed, after its checkpoint."""


def stop_at(step: int) -> Any:
    def callback(trainer: Any, current: int, row: dict[str, float]) -> None:
        if current == step:
            raise StoppedError

    return callback


def reshard_config(out_dir: str, head: str, optim: str, batch_size: int, steps: int, every: int) -> dict[str, Any]:
    """:func:`ddp_config` (BatchNorm-free tiny_cnn, 7 classes, poly with warm-up) with ``optim`` and a checkpoint
    every ``every`` steps."""
    data = ddp_config(out_dir, head, batch_size, steps)
    data["optim"]["name"] = optim
    data["train"]["checkpoint_every"] = every
    return data


def run_rank(
    rank: int,
    world_size: int,
    data: dict[str, Any],
    resume: bool,
    stop: int | None,
) -> int:
    """Train one rank as ``data`` says (resumed or not), stopping after step ``stop``; returns the last step."""
    torch.set_num_threads(1)
    register()
    try:
        return train(config_from_dict(data), resume=resume, callbacks=[stop_at(stop)] if stop else []).step
    except StoppedError:
        return stop or 0
