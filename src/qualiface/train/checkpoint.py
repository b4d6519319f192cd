"""Atomic, resumable checkpoints: one folder per step, one file per rank.

Layout of a run directory::

    checkpoints/step_00000100/rank0.pt      backbone, head (this rank's shard), optimizer, scheduler, scaler,
    checkpoints/step_00000100/rank1.pt      step, RNG states, resolved config, library version, world size
    checkpoints/step_00000100/COMPLETE      written last: the folder is usable

Each rank writes ``rankR.pt`` to a temporary file and renames it (``os.replace``) into
``step_N.partial/``; after a barrier rank 0 writes ``COMPLETE`` and renames the folder to ``step_N``. A folder
without ``COMPLETE`` (a run killed while saving) is never resumed from, and the previous checkpoint is left in
place until a newer one is complete. Files load with ``torch.load(weights_only=True)``. The scheduler's state is
written for reference only: a resume rebuilds the schedule from its config at the step
(:mod:`qualiface.train.resume`).

A checkpoint written by ``N`` processes resumes on ``M`` (:func:`load_rank_state` with :class:`ClassRows`):
rank ``r`` of ``M`` reads the rank files whose class block (:class:`~qualiface.heads.sharding.ShardSpec`)
overlaps its own and joins their rows of every per-class entry (the head's ``class_rows``: class centres,
UniTSFace's memory; and the optimizer state shaped like those parameters: SGD momentum, AdamW moments). The
replicated rest (backbone, the head's other entries and parameters, the optimizer's scalars, step, config,
scaler) and the RNG states come from the first of those files.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qualiface.atomic import atomic_path, atomic_torch_save, fsync_dir
from qualiface.errors import InputError, RunError
from qualiface.heads.sharding import ShardSpec
from qualiface.run_layout import COMPLETE_MARKER, RunLayout, rank_files
from qualiface.train.distributed import DistInfo, barrier


class CheckpointError(RunError):
    """A checkpoint that cannot be written or read (the message names it); a run failure, exit code 1."""


class ResumeRefusedError(CheckpointError, InputError):
    """A ``--resume`` the user's input makes impossible (no checkpoint, a config change that cannot be applied):
    a :class:`CheckpointError` and an :class:`~qualiface.errors.InputError` (exit code 2)."""


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


@dataclass(frozen=True)
class ClassRows:
    """The entries of a rank's state that hold one row per class of its shard, for resuming a checkpoint on
    another number of processes.

    Attributes:
        num_classes: ``C``, split over the ranks as :class:`~qualiface.heads.sharding.ShardSpec` says.
        head: the head's state entries with a row per local class (``Head.class_rows``).
        optimizer: optimizer state index -> the head parameter it belongs to, for the parameters among ``head``
            (their state tensors shaped like the parameter are split by rows too).
    """

    num_classes: int
    head: frozenset[str]
    optimizer: Mapping[int, str] = field(default_factory=dict)


def read_checkpoint_config(folder: Path) -> tuple[dict[str, Any], int]:
    """``(the config a complete checkpoint was written with, the number of processes that wrote it)``, read
    without loading its tensors (memory-mapped)."""
    files = _complete_rank_files(Path(folder))
    return dict(_load(files[0], mmap=True)["config"]), len(files)


def load_rank_state(
    folder: Path, info: DistInfo, class_rows: ClassRows | None = None, map_location: torch.device | str = "cpu"
) -> dict[str, Any]:
    """This rank's state from a complete checkpoint folder. Written by another number of processes, it is
    resharded for this one when ``class_rows`` says which entries are split by class, else refused."""
    folder = Path(folder)
    files = _complete_rank_files(folder)
    if len(files) == info.world_size:
        return _load(files[info.rank], map_location=map_location)
    if class_rows is None:
        raise CheckpointError(
            f"{folder}: written by {len(files)} process(es) but this run has {info.world_size}; resume with the "
            f"same number of processes (the class centres are sharded per rank)"
        )
    return _resharded_state(files, info, class_rows, map_location)


def _complete_rank_files(folder: Path) -> list[Path]:
    if not (folder / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{folder}: not a complete checkpoint (no COMPLETE marker; the save was interrupted)")
    files = rank_files(folder)
    if [p.name for p in files] != [f"rank{r}.pt" for r in range(len(files))]:
        names = ", ".join(p.name for p in files) or "none"
        raise CheckpointError(f"{folder}: the rank files are not rank0.pt ... rank(N-1).pt (found {names})")
    return files


def _load(path: Path, map_location: torch.device | str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A rank file, its tensors checked before anything allocates what they declare (the model files' bounds)."""
    from qualiface.models.formats.tensor_bounds import declared_budget, unbounded_tensor

    try:
        state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # corrupt or foreign file
        raise CheckpointError(f"{path}: cannot be read as a qualiface checkpoint ({exc})") from exc
    problem = unbounded_tensor(state, declared_budget(path.stat().st_size))
    if problem is not None:
        raise CheckpointError(f"{path}: refused, {problem}")
    return state


def _resharded_state(
    files: list[Path], info: DistInfo, rows: ClassRows, map_location: torch.device | str
) -> dict[str, Any]:
    """Rank ``info.rank``'s state from the rank files of a run with ``len(files)`` processes (module docstring)."""
    folder = files[0].parent
    total = rows.num_classes
    new = ShardSpec(info.rank, info.world_size)
    start = new.class_start(total)
    stop = start + new.num_local(total)
    parts: list[_Part] = []  # the old shards that hold some of our classes
    for old_rank, path in enumerate(files):
        old = ShardSpec(old_rank, len(files))
        first, count = old.class_start(total), old.num_local(total)
        low, high = max(start, first), min(stop, first + count)
        if low < high:
            parts.append(_Part(_load(path, map_location=map_location), count, slice(low - first, high - first)))
    state = dict(parts[0].state)
    head = dict(state["head"])
    for key in rows.head:
        head[key] = _join_rows([(part.state["head"][key], part) for part in parts], f"{folder}: head.{key}")
    state["head"] = head
    optimizer = dict(state["optimizer"])
    optimizer["state"] = dict(optimizer["state"])
    for index, name in rows.optimizer.items():
        entries = [part.state["optimizer"]["state"].get(index) for part in parts]
        if all(entry is None for entry in entries):
            continue  # never stepped: no state to split
        if any(entry is None for entry in entries):
            raise CheckpointError(f"{folder}: the optimizer state of head.{name} is missing from some rank files")
        shape = parts[0].state["head"][name].shape
        joined = dict(entries[0])
        for key, value in entries[0].items():  # tensors shaped like the parameter; scalars (AdamW's step) as is
            if isinstance(value, torch.Tensor) and value.shape == shape:
                pieces = [(entry[key], part) for entry, part in zip(entries, parts, strict=True)]
                joined[key] = _join_rows(pieces, f"{folder}: the optimizer state {key!r} of head.{name}")
        optimizer["state"][index] = joined
    state["optimizer"] = optimizer
    state["world_size"], state["rank"] = info.world_size, info.rank
    return state


@dataclass(frozen=True)
class _Part:
    """One old rank's state, its number of classes and the rows of them that the new rank takes."""

    state: dict[str, Any]
    rows: int
    own: slice


def _join_rows(pieces: list[tuple[torch.Tensor, _Part]], where: str) -> torch.Tensor:
    """The rows each old shard gives the new rank, in rank order."""
    for tensor, part in pieces:
        if tensor.dim() == 0 or tensor.shape[0] != part.rows or tensor.shape[1:] != pieces[0][0].shape[1:]:
            raise CheckpointError(
                f"{where}: shape {tuple(tensor.shape)} in a rank file, expected {part.rows} rows of "
                f"{tuple(pieces[0][0].shape[1:])}"
            )
    return torch.cat([tensor[part.own] for tensor, part in pieces])
