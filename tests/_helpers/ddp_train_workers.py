"""Workers for the distributed training tests: one rank of a real ``qualiface.train.train`` run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from _helpers.tiny_backbone import register
from qualiface.config import config_from_dict
from qualiface.train import train


def ddp_config(out_dir: str, head: str, batch_size: int, steps: int) -> dict[str, Any]:
    branch = {"cr_fiqa": "cr_fiqa", "scaleface": "scaleface"}.get(head)
    kwargs: dict[str, Any] = {"input_size": 16, "norm": False}  # no BatchNorm: its statistics are per process
    if branch:
        kwargs["quality_branch"] = branch
    return {
        "model": {"backbone": "tiny_cnn", "kwargs": kwargs},
        "head": {"name": head},
        "data": {
            "synthetic": {"num_identities": 7, "images_per_identity": 4, "size": 16},
            "batch_size": batch_size,
            "num_workers": 0,
        },
        "optim": {"lr": 0.05},
        "schedule": {"name": "poly", "warmup_steps": 1},
        # device cpu (gloo): two ranks on one GPU would fail under NCCL; tests/gpu/test_nccl.py runs CUDA ranks
        "train": {
            "out_dir": out_dir,
            "steps": steps,
            "precision": "fp32",
            "device": "cpu",
            "log_every": 1,
            "checkpoint_every": 2,
        },
        "log": {"progress": False},
    }


def run_rank(rank: int, world_size: int, out_dir: str, head: str, batch_size: int, steps: int) -> dict[str, Any]:
    """Train as one rank (the environment holds RANK/WORLD_SIZE; train() initialises gloo itself)."""
    torch.set_num_threads(1)
    register()  # this worker process only
    cfg = config_from_dict(ddp_config(out_dir, head, batch_size, steps))
    result = train(cfg)
    state = torch.load(Path(out_dir) / "checkpoints" / f"step_{steps:08d}" / f"rank{rank}.pt", weights_only=True)
    losses = []
    if rank == 0:
        with open(Path(out_dir) / "metrics.csv", newline="") as fh:
            losses = [float(row["loss"]) for row in csv.DictReader(fh) if row.get("loss")]
    return {"backbone": state["backbone"], "head": state["head"], "losses": losses, "step": result.step}


def run_rank_sampled(rank: int, world_size: int, out_dir: str, head: str, steps: int) -> dict[str, Any]:
    """A Partial FC run with negative-centre sampling (rate 0.5) on the sharded head."""
    torch.set_num_threads(1)
    register()
    data = ddp_config(out_dir, head, 4, steps)
    data["head"]["sample_rate"] = 0.5
    data["data"]["synthetic"]["num_identities"] = 12
    cfg = config_from_dict(data)
    train(cfg)
    state = torch.load(Path(out_dir) / "checkpoints" / f"step_{steps:08d}" / f"rank{rank}.pt", weights_only=True)
    losses = []
    if rank == 0:
        with open(Path(out_dir) / "metrics.csv", newline="") as fh:
            losses = [float(row["loss"]) for row in csv.DictReader(fh) if row.get("loss")]
    return {"backbone": state["backbone"], "head": state["head"], "losses": losses}
