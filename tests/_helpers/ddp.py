"""Run a function in several gloo processes on CPU and collect what each rank returns.

The worker must be a module-level function in an importable module (``tests/_helpers/...`` or the library):
the processes are started with ``spawn``, which re-imports it by name. Each rank's return value is saved with
``torch.save`` and read back with ``weights_only=True``, so return tensors, numbers, strings, lists and dicts.
A rank that raises makes :func:`run_distributed` raise with that rank's traceback; nothing passes silently.
"""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry(rank: int, world_size: int, port: int, out_dir: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    path = Path(out_dir)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, path / f"rank{rank}.pt")
    except BaseException:
        (path / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def init_gloo(rank: int, world_size: int) -> None:
    """``init_process_group("gloo")`` from the environment :func:`run_distributed` set."""
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 300.0) -> list[Any]:
    """``[fn(rank, world_size, *args) for rank in range(world_size)]``, each rank in its own process.

    ``fn`` calls :func:`init_gloo` itself when it needs a process group (the environment variables
    ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are set, as under torchrun).
    """
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.get_context("spawn")
        port = free_port()
        procs = [
            context.Process(target=_entry, args=(rank, world_size, port, out_dir, fn, args), daemon=False)
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout)
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        errors = sorted(Path(out_dir).glob("rank*.error"))
        if errors:
            raise RuntimeError("\n".join(f"{e.stem}:\n{e.read_text()}" for e in errors))
        bad = [(rank, proc.exitcode) for rank, proc in enumerate(procs) if proc.exitcode != 0]
        if bad:
            raise RuntimeError(f"distributed workers failed or timed out after {timeout} s: (rank, exit code) {bad}")
        return [torch.load(Path(out_dir) / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)]
