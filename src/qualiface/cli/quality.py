"""``qualiface quality PHOTOS... --model M``: one quality score per face (higher = better), raw and on the
model's calibrated 0–100 scale; ``--format ofiq`` writes OFIQ's result layout."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.cli.apps import app
from qualiface.cli.outputs import OverwriteOption, refuse_existing_file
from qualiface.cli.photos import (
    AlignedOption,
    AllFacesOption,
    DetectorOption,
    PreprocessingOption,
    ProgressOption,
    faces_of,
    fail,
    open_model,
    report_failures,
)

#: OFIQ-style measure names of the quality methods (OFIQ names its measures in CamelCase, e.g.
#: ``UnifiedQualityScore``); another method gets its name in CamelCase.
OFIQ_MEASURES = {"cr_fiqa": "CrFiqa", "scaleface": "ScaleFace", "feature_norm": "FeatureNorm"}
FORMATS = ("csv", "ofiq")


def ofiq_measure(method: str) -> str:
    """The OFIQ column name of a quality method."""
    return OFIQ_MEASURES.get(method) or "".join(part.capitalize() for part in method.replace("-", "_").split("_"))


@app.command("quality")
def quality(
    photos: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A model: its trained quality output, else its raw embedding norm.")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV file (default: standard output).")] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="csv: file, face, score, scaled, method, ...; ofiq: OFIQ's layout, Filename;<Measure>;"
            "<Measure>.scalar (raw score, then 0-100).",
        ),
    ] = "csv",
    separator: Annotated[
        str | None, typer.Option(help="Column separator (default: ',' for csv, ';' as OFIQ for ofiq).")
    ] = None,
    overwrite: OverwriteOption = False,
    aligned: AlignedOption = False,
    all_faces: AllFacesOption = False,
    progress: ProgressOption = True,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Score every face: CSV with file, face, score (the model's raw quality), scaled (0-100 through the model's
    calibration images: 50 = their median; empty without a calibration), method, source (branch, head, or
    embedding_norm: the raw embedding's norm of a recognizer not trained for quality), model, model_sha256,
    preprocessing. With --format ofiq: Filename, <Measure> (raw), <Measure>.scalar (0-100, an integer as in OFIQ)."""
    from qualiface.atomic import atomic_path
    from qualiface.decisions import DecisionPolicy
    from qualiface.models import embed_images

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise fail(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    sep = separator if separator is not None else (";" if fmt == "ofiq" else ",")
    if len(sep) != 1 or sep in '"\r\n':
        raise fail(f"--separator {sep!r}: expected one character other than a quote or a line break")
    if fmt == "ofiq" and all_faces:
        raise fail("--format ofiq writes one row per file, as OFIQ does (the largest face); drop --all-faces")
    refuse_existing_file(out, overwrite)
    face_model = open_model(model, preprocessing=preprocessing)
    info = face_model.quality_info(allow_untrained=True)
    assert info is not None
    if info.source == "embedding_norm":
        typer.echo(
            f"note: {face_model.name} has no trained quality output; scores are the norm of its raw embedding "
            f"(method feature_norm, source embedding_norm), a heuristic",
            err=True,
        )
    policy = DecisionPolicy.from_model(face_model)
    calibrated = face_model.card.quality_calibration
    scale = policy.quality_scale if calibrated is not None and calibrated.method == info.method else None
    if scale is None:
        typer.echo(
            f"note: no 0-100 scale for {face_model.name}'s {info.method} (qualiface calibrate measures it); "
            f"the scaled column is empty",
            err=True,
        )
    faces = faces_of(photos, aligned=aligned, all_faces=all_faces, progress=progress, detector=detector)
    scores: Any = []
    if len(faces):
        try:
            embedded = embed_images(face_model, faces.images, quality=True, allow_untrained_quality=True, flip=False)
        except ValueError as exc:
            raise fail(str(exc), 1) from exc
        assert embedded.quality is not None  # quality=True: embed_images returns the scores or raises
        scores = embedded.quality
    scaled = [None if scale is None else float(scale.scaled(float(s))) for s in scores]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    if fmt == "ofiq":
        measure = ofiq_measure(info.method)
        writer.writerow(["Filename", measure, f"{measure}.scalar"])
        for (path, _), score, value in zip(faces.sources, scores, scaled, strict=True):
            writer.writerow([str(path), f"{float(score):.6g}", "" if value is None else round(value)])
    else:
        stamp = face_model.card.stamp()
        header = ["file", "face", "score", "scaled", "method", "source", "model", "model_sha256", "preprocessing"]
        writer.writerow(header)
        for (path, index), score, value in zip(faces.sources, scores, scaled, strict=True):
            writer.writerow(
                [
                    str(path),
                    index,
                    f"{float(score):.6g}",
                    "" if value is None else f"{value:.2f}",
                    info.method,
                    info.source,
                    stamp["model"],
                    stamp["model_sha256"],
                    stamp["preprocessing"],
                ]
            )
    rows = len(faces)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(buffer.getvalue())
    else:
        sys.stdout.write(buffer.getvalue())
    report_failures(faces)
    if out is not None:
        typer.echo(f"wrote {rows} quality scores to {out}")
    if not rows:
        raise fail("no face was scored", 1)
