"""Workers of the CUDA distributed checks (tests/gpu/test_nccl.py): one rank of a real training run on
``cuda:LOCAL_RANK``, with the backend the trainer picks for CUDA (``auto``: NCCL)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from _helpers.ddp_train_workers import ddp_config
from _helpers.tiny_backbone import register
from qualiface.config import config_from_dict
from qualiface.train import train


def run_rank_cuda(rank: int, world_size: int, out_dir: str, head: str, batch_size: int, steps: int) -> dict[str, Any]:
    """Train as one rank on CUDA (``train.device: cuda``, ``train.backend: auto``), float32 without TF32 so that two
    processes can equal one; returns this rank's final weights, rank 0's losses and the process group's backend."""
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]  # not in the stubs
    register()
    data = ddp_config(out_dir, head, batch_size, steps)
    data["train"].update(device="cuda", backend="auto")
    seen: dict[str, Any] = {}

    def spy(trainer: Any, step: int, row: dict[str, Any]) -> None:
        seen["device"] = str(trainer.device)
        seen["backend"] = dist.get_backend() if dist.is_initialized() else None

    result = train(config_from_dict(data), callbacks=[spy])
    state = torch.load(
        Path(out_dir) / "checkpoints" / f"step_{steps:08d}" / f"rank{rank}.pt", weights_only=True, map_location="cpu"
    )
    losses = []
    if rank == 0:
        with open(Path(out_dir) / "metrics.csv", newline="") as fh:
            losses = [float(row["loss"]) for row in csv.DictReader(fh) if row.get("loss")]
    return {"backbone": state["backbone"], "head": state["head"], "losses": losses, "step": result.step, **seen}
