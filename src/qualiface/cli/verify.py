"""``qualiface verify A B --model M``: same person or not, with both quality scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import DetectorOption, PreprocessingOption, faces_of, fail, open_model


@app.command("verify")
def verify(
    image_a: Annotated[Path, typer.Argument(help="First photo.")],
    image_b: Annotated[Path, typer.Argument(help="Second photo.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model file, run directory or ONNX recognizer.")],
    threshold: Annotated[
        float | None, typer.Option(help="Cosine threshold (default: the model's own or its calibration).")
    ] = None,
    aligned: Annotated[bool, typer.Option(help="Photos are aligned 112x112 crops: no detection.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Compare the largest face of A with the largest face of B: similarity, decision, qualities, warnings."""
    from qualiface.use import compare

    face_model = open_model(model, preprocessing=preprocessing)
    faces = [faces_of([p], aligned=aligned, progress=False, detector=detector) for p in (image_a, image_b)]
    try:
        result = compare(face_model, faces[0], faces[1], threshold=threshold)
    except ValueError as exc:
        raise fail(str(exc), 1) from exc
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(f"similarity  {result.similarity:.4f} (cosine)")
        if result.threshold is not None:
            verdict = "same person" if result.match else "different people"
            typer.echo(f"decision    {verdict} (threshold {result.threshold:.4f} from {result.threshold_source})")
        else:
            typer.echo("decision    none (no threshold)")
        if result.quality_method is not None:
            typer.echo(f"quality     A {result.quality_a:.4g}, B {result.quality_b:.4g} ({result.quality_method})")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
