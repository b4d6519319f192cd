"""``qualiface quality PHOTOS... --model M``: one quality score per face (higher = better)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import faces_of, fail, open_model, report_failures


@app.command("quality")
def quality(
    photos: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    model: Annotated[str, typer.Option("--model", "-m", help="A model with a quality output.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV file (default: standard output).")] = None,
    aligned: Annotated[bool, typer.Option(help="Photos are aligned 112x112 crops: no detection.")] = False,
    all_faces: Annotated[bool, typer.Option(help="Every face of a photo, not only the largest.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score every face: CSV with file, face, score, method."""
    face_model = open_model(model)
    if face_model.quality_method is None:
        raise fail(
            f"{face_model.name} has no quality output; use a MagFace/AdaFace (feature norm), CR-FIQA or ScaleFace "
            f"model, or one trained here with a quality-aware head"
        )
    faces = faces_of(photos, aligned=aligned, all_faces=all_faces, progress=progress)
    scores = face_model.quality(faces.images) if len(faces) else []
    rows = [
        (str(path), index, f"{float(score):.6g}", face_model.quality_method)
        for (path, index), score in zip(faces.sources, scores, strict=True)
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "face", "score", "method"])
    writer.writerows(rows)
    if out is not None:
        out.write_text(buffer.getvalue())
    else:
        sys.stdout.write(buffer.getvalue())
    report_failures(faces)
    if out is not None:
        typer.echo(f"wrote {len(rows)} quality scores to {out}")
