"""``qualiface quality PHOTOS... --model M``: one quality score per face (higher = better)."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import DetectorOption, PreprocessingOption, faces_of, fail, open_model, report_failures


@app.command("quality")
def quality(
    photos: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A model: its trained quality output, else its raw embedding norm.")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV file (default: standard output).")] = None,
    aligned: Annotated[bool, typer.Option(help="Photos are aligned 112x112 crops: no detection.")] = False,
    all_faces: Annotated[bool, typer.Option(help="Every face of a photo, not only the largest.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Score every face: CSV with file, face, score, method, source (branch, head, or embedding_norm: the raw
    embedding's norm of a recognizer not trained for quality), model, model_sha256, preprocessing."""
    from qualiface.models import embed_images

    face_model = open_model(model, preprocessing=preprocessing)
    info = face_model.quality_info(allow_untrained=True)
    assert info is not None
    if info.source == "embedding_norm":
        typer.echo(
            f"note: {face_model.name} has no trained quality output; scores are the norm of its raw embedding "
            f"(method feature_norm, source embedding_norm), a heuristic",
            err=True,
        )
    faces = faces_of(photos, aligned=aligned, all_faces=all_faces, progress=progress, detector=detector)
    scores: Iterable[float] = []
    if len(faces):
        try:
            embedded = embed_images(face_model, faces.images, quality=True, allow_untrained_quality=True, flip=False)
        except ValueError as exc:
            raise fail(str(exc), 1) from exc
        assert embedded.quality is not None  # quality=True: embed_images returns the scores or raises
        scores = embedded.quality
    stamp = face_model.card.stamp()
    rows = [
        (
            str(path),
            index,
            f"{float(score):.6g}",
            info.method,
            info.source,
            stamp["model"],
            stamp["model_sha256"],
            stamp["preprocessing"],
        )
        for (path, index), score in zip(faces.sources, scores, strict=True)
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "face", "score", "method", "source", "model", "model_sha256", "preprocessing"])
    writer.writerows(rows)
    if out is not None:
        out.write_text(buffer.getvalue())
    else:
        sys.stdout.write(buffer.getvalue())
    report_failures(faces)
    if out is not None:
        typer.echo(f"wrote {len(rows)} quality scores to {out}")
    if not rows:
        raise fail("no face was scored", 1)
