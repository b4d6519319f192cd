"""Process-group set-up for one process or many under ``torchrun``; the only place that initialises one.

``torchrun --nproc_per_node N`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them (or with
``WORLD_SIZE=1``) training runs in one process and no process group is created. The backend is NCCL when the
process drives a CUDA device and gloo otherwise, so the same command runs on a laptop CPU and a GPU cluster.
"""

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from qualiface.train.launcher_guard import guard_rank


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs, reports and the exported model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def setup_distributed(backend: str = "auto", device: str = "auto", timeout_minutes: float = 10.0) -> DistInfo:
    """Read the torchrun environment, pick the device and initialise the process group when ``WORLD_SIZE > 1``.

    Args:
        backend: ``auto`` (NCCL for CUDA, gloo for CPU), ``gloo`` or ``nccl``.
        device: ``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else CPU), ``cpu`` or ``cuda``.
        timeout_minutes: how long a collective waits for the other ranks before it fails (``train.ddp_timeout``).
    """
    guard_rank()  # under torchrun: this rank ends with its agent, never trains on as an orphan
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but CUDA is not available")
        count = torch.cuda.device_count()
        nccl = world_size > 1 and backend in ("auto", "nccl")
        if nccl and local_rank >= count:  # NCCL refuses two ranks on one GPU, after a long wait
            raise ValueError(
                f"LOCAL_RANK {local_rank}, but this machine has {count} CUDA device(s): start at most {count} "
                f"process(es) per machine (torchrun --nproc_per_node {count}), or set train.backend: gloo or "
                f"train.device: cpu"
            )
        dev = torch.device("cuda", local_rank % count)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
        if chosen == "nccl" and not use_cuda:
            raise ValueError("train.backend 'nccl' needs CUDA devices; use 'gloo' (or 'auto') on CPU")
        kwargs: dict[str, Any] = {"timeout": timedelta(minutes=timeout_minutes)}
        if chosen == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(chosen, rank=rank, world_size=world_size, **kwargs)
        initialized_here = True
    return DistInfo(rank, local_rank, world_size, dev, initialized_here)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device | None = None) -> bool:
    """Whether ``flag`` is true on any rank (one small all-reduce; ``flag`` itself in one process)."""
    if not info.distributed:
        return flag
    value = torch.tensor([int(flag)], device=device if device is not None else info.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def sum_gradients_hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook that SUMS gradients over ranks (the default averages).

    The sharded heads give every rank the exact partial derivative of the global-batch loss with respect to
    its local embeddings, so the backbone gradient is the sum of the ranks' contributions.
    """
    group = state if isinstance(state, dist.ProcessGroup) else None
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])
