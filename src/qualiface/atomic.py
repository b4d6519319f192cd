"""Atomic file replacement: write a temporary file beside the target, then rename it over the target.

    with atomic_path(path) as tmp:
        write(tmp)          # anything that writes a file at tmp

A reader sees the old file or the new one, never a half-written one; if the block raises, the target is left
as it was and the temporary file is removed. With ``fsync`` (the default) the content and then the folder entry
are flushed to disk, so after a power loss the file is the old one or the whole new one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` (``os.replace``), after an
    ``fsync`` of its content unless ``fsync=False``. The folder must exist."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        if fsync:
            fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


TMP_PATTERN = ".*.tmp-*"
"""The names :func:`atomic_path` gives its temporary files (left behind only by a killed process)."""


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (created, renamed, removed files) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` through :func:`atomic_path` (checkpoints, model files)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
