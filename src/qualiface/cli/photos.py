"""Shared pieces of the photo commands: open a model, turn photos into faces with a progress bar, report failures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def open_model(model: str, *, fmt: str | None = None, arch: str | None = None) -> Any:
    """:func:`qualiface.models.load_model` with its errors turned into a clean exit."""
    from qualiface.models import ModelLoadError, load_model

    try:
        return load_model(model, format=fmt, arch=arch)
    except (ModelLoadError, FileNotFoundError, NotImplementedError, ImportError) as exc:
        raise fail(str(exc)) from exc


def faces_of(
    photos: Sequence[Path], *, aligned: bool, all_faces: bool = False, progress: bool = True, what: str = "faces"
) -> Any:
    """Expand folders, detect and align (or take aligned crops) with a progress bar."""
    from tqdm.auto import tqdm

    from qualiface.use import expand_photos, load_faces

    try:
        paths = expand_photos(photos)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    bar = tqdm(total=len(paths), desc=what, unit="file", disable=not progress or len(paths) < 2, leave=False)

    def step(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        return load_faces(paths, aligned=aligned, all_faces=all_faces, progress=step)
    finally:
        bar.close()


def report_failures(faces: Any) -> None:
    """Every file that gave no face, and files with several faces, then the summary line (stderr)."""
    for failure in faces.failures:
        typer.echo(f"skipped {failure.path}: {failure.reason}: {failure.message}", err=True)
    for path, count in faces.multiple:
        typer.echo(f"note {path}: {count} faces", err=True)
    typer.echo(faces.summary(), err=True)
