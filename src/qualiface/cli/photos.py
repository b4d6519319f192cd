"""Shared pieces of the photo commands: open a model, turn photos into faces with a progress bar, report failures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.detect.options import DETECTOR_HELP
from qualiface.models.card import PREPROCESSING_HELP


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


#: The one spelling of the preprocessing override, on every command that runs a model.
PreprocessingOption = Annotated[
    str | None,
    typer.Option(
        "--preprocessing",
        help="State the model's preprocessing (replaces what the model file says; needed for an ONNX recognizer "
        "qualiface does not know): " + PREPROCESSING_HELP,
    ),
]


#: The one spelling of the detector settings, on every command that finds faces in photos.
DetectorOption = Annotated[
    str | None,
    typer.Option("--detector", help="How faces are found: " + DETECTOR_HELP),
]


#: The model of a photo command: the one spelling (``load_model`` reads it).
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model file, run directory or ONNX recognizer.")]

#: The decision threshold of verify and search: a cosine, or 'learned' (qualiface.decisions.parse_threshold).
ThresholdOption = Annotated[
    str | None,
    typer.Option(
        help="Cosine threshold, or 'learned' for the model's threshold learned in training (UniTSFace; "
        "`qualiface info` shows its FMR and FNMR once `qualiface calibrate` measured them). Default: the model's "
        "calibrated threshold; without one, no decision.",
    ),
]

#: The progress bar of a command that takes a while (shown only on a terminal).
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar.")]

#: Photos or aligned crops: the one spelling on every command that finds faces.
AlignedOption = Annotated[
    bool,
    typer.Option(
        "--aligned/--detect",
        help="--aligned: the files are aligned 112x112 crops (no detection); --detect: find the faces (default).",
    ),
]

#: Every face of a photo or its largest: the one spelling on every command that finds faces.
AllFacesOption = Annotated[
    bool, typer.Option("--all-faces/--largest", help="Every face of a photo, or only its largest (box area).")
]


def detector_options(spec: str | None) -> Any:
    """The :class:`~qualiface.detect.options.DetectorOptions` of a ``--detector`` value."""
    from qualiface.detect.options import DetectorOptions

    return DetectorOptions.parse(spec)


def open_model(
    model: str,
    *,
    preprocessing: str | None = None,
    fmt: str | None = None,
    arch: str | None = None,
    quiet: bool = False,
    describe_only: bool = False,
) -> Any:
    """:func:`qualiface.models.load_model` with its errors turned into a clean exit; prints (stderr) which model
    and which preprocessing every result comes from."""
    from qualiface.models import ModelLoadError, load_model

    try:
        loaded = load_model(model, format=fmt, arch=arch, preprocessing=preprocessing, describe_only=describe_only)
    except (ModelLoadError, FileNotFoundError, NotImplementedError, ImportError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if not quiet:
        card = loaded.card
        sha = (card.weights_sha256 or "unknown")[:16]
        typer.echo(f"model: {card.name} ({card.source_format}, sha256 {sha}...)", err=True)
        origin = card.provenance.get("preprocessing_from") or card.preprocessing.source
        typer.echo(f"preprocessing: {card.preprocessing.describe()} (from: {origin})", err=True)
    return loaded


def faces_of(
    photos: Sequence[Path],
    *,
    aligned: bool,
    all_faces: bool = False,
    progress: bool = True,
    what: str = "faces",
    detector: str | None = None,
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
        return load_faces(
            paths, aligned=aligned, all_faces=all_faces, detector_options=detector_options(detector), progress=step
        )
    finally:
        bar.close()


def report_failures(faces: Any) -> None:
    """Every file that gave no face, files with several faces and files found by a retry, then the summary line
    (stderr)."""
    for failure in faces.failures:
        typer.echo(f"skipped {failure.path}: {failure.reason}: {failure.message}", err=True)
    for path, count in faces.multiple:
        typer.echo(f"note {path}: {count} faces", err=True)
    for path, step in getattr(faces, "retried", ()):
        typer.echo(f"note {path}: no face on the first pass; found after the '{step}' retry", err=True)
    typer.echo(faces.summary(), err=True)
