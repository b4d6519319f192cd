"""Atomic, resumable checkpoints: one folder per step, one file per rank.

Layout of a run directory::

    checkpoints/step_00000100/rank0.pt      backbone, head (this rank's shard), optimizer, scheduler, scaler,
    checkpoints/step_00000100/rank1.pt      step, RNG states, resolved config, library version, world size
    checkpoints/step_00000100/COMPLETE      written last: the folder is usable

Each rank writes ``rankR.pt`` to a temporary file and renames it (``os.replace``) into
``step_N.partial/``; after a barrier rank 0 writes ``COMPLETE`` and renames the folder to ``step_N``. A folder
without ``COMPLETE`` (a run killed while saving) is never resumed from, and the previous checkpoint is left in
place until a newer one is complete. Files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qualiface.atomic import atomic_path, atomic_torch_save, fsync_dir
from qualiface.run_layout import COMPLETE_MARKER, RunLayout, rank_files
from qualiface.train.distributed import DistInfo, barrier


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: names the path and what is wrong."""


atomic_save = atomic_torch_save  # the name the trainer and its tests use


def rng_state() -> dict[str, Any]:
    """Every random state a step may consume (torch CPU and CUDA, NumPy's legacy global, Python's)."""
    np_state = np.random.get_state()  # noqa: NPY002 (user transforms may draw on it)
    if not isinstance(np_state, tuple):  # the legacy form exists only for MT19937
        raise RuntimeError(
            "NumPy's global random generator is not MT19937 (np.random.set_bit_generator?): its state cannot be "
            "checkpointed"
        )
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    legacy = (kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss))
    np.random.set_state(legacy)  # noqa: NPY002
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def step_dir(run_dir: Path, step: int) -> Path:
    return RunLayout(run_dir).step_dir(step)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    return RunLayout(run_dir).list_checkpoints()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or ``None``."""
    return RunLayout(run_dir).latest_checkpoint()


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], info: DistInfo, keep: int) -> Path:
    """Write this rank's ``state`` for ``step`` (collective: every rank calls it); returns the folder."""
    final = step_dir(run_dir, step)
    partial = final.with_name(final.name + ".partial")
    if info.is_main:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    barrier(info)
    atomic_save(state, partial / f"rank{info.rank}.pt")
    barrier(info)
    if info.is_main:
        with atomic_path(partial / COMPLETE_MARKER) as tmp:  # fsynced, then the folder's entries
            tmp.write_text(f"step {step}\nworld_size {info.world_size}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        fsync_dir(final.parent)  # the rename itself
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def load_rank_state(folder: Path, info: DistInfo, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """This rank's state from a complete checkpoint folder; checks the world size it was written with."""
    folder = Path(folder)
    if not (folder / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{folder}: not a complete checkpoint (no COMPLETE marker; the save was interrupted)")
    files = rank_files(folder)
    if len(files) != info.world_size:
        raise CheckpointError(
            f"{folder}: written by {len(files)} process(es) but this run has {info.world_size}; resume with the "
            f"same number of processes (the class centres are sharded per rank)"
        )
    path = folder / f"rank{info.rank}.pt"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise CheckpointError(f"{path}: cannot be read as a qualiface checkpoint ({exc})") from exc
