"""``qualiface export MODEL --onnx out.onnx [--safetensors out.safetensors]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import fail, open_model


@app.command("export")
def export(
    model: Annotated[str, typer.Argument(help="Model file or run directory (PyTorch weights).")],
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Write an ONNX model (dynamic batch).")] = None,
    safetensors: Annotated[Path | None, typer.Option("--safetensors", help="Write safetensors weights.")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    check: Annotated[bool, typer.Option(help="Compare onnxruntime with PyTorch on random faces.")] = True,
) -> None:
    """Export the embedding (and quality, where the model has one) to ONNX and/or the weights to safetensors."""
    import numpy as np

    from qualiface.models import export_onnx, export_safetensors, load_model

    if onnx is None and safetensors is None:
        raise fail("nothing to do: give --onnx FILE and/or --safetensors FILE")
    face_model = open_model(model)
    if face_model.module is None:
        raise fail(f"{face_model.name} is already an ONNX model; export needs PyTorch weights")
    try:
        if onnx is not None:
            path = export_onnx(face_model, onnx, opset=opset)
            typer.echo(f"wrote {path}")
            if check:
                rng = np.random.default_rng(0)
                images = rng.integers(0, 256, size=(3, *face_model.input_size, 3), dtype=np.uint8)
                exported = load_model(path)
                ours, theirs = face_model.embed(images), exported.embed(images)
                error = float(np.max(np.abs(ours - theirs)) / max(1e-12, float(np.max(np.abs(ours)))))
                typer.echo(f"onnxruntime vs PyTorch: max relative difference {error:.2e} on 3 random images")
                if error > 1e-4:
                    raise fail(f"the ONNX output differs from PyTorch by {error:.2e} (> 1e-4)", 1)
        if safetensors is not None:
            typer.echo(f"wrote {export_safetensors(face_model, safetensors)}")
    except (ImportError, ValueError, RuntimeError) as exc:
        raise fail(str(exc), 1) from exc
