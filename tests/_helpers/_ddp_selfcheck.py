"""Worker for the DDP helper's own test."""

import torch
import torch.distributed as dist

from _helpers.ddp import init_gloo


def all_reduce_rank(rank: int, world_size: int, offset: float) -> dict[str, torch.Tensor]:
    init_gloo(rank, world_size)
    value = torch.tensor([float(rank) + offset])
    dist.all_reduce(value)
    return {"sum": value, "rank": torch.tensor(rank)}


def fail_on_rank_one(rank: int, world_size: int) -> None:
    if rank == 1:
        raise ValueError("rank one fails on purpose")
