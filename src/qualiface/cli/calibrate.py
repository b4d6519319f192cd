"""``qualiface calibrate --model M --pairs pairs.csv --fmr 1e-3``: a decision threshold, the calibrated confidence
and the quality scale and floor, stored with the model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import (
    DetectorOption,
    PreprocessingOption,
    ProgressOption,
    detector_options,
    fail,
    open_model,
)


@app.command("calibrate")
def calibrate(
    model: Annotated[str, typer.Option("--model", "-m", help="Model file or run directory (gets a sidecar file).")],
    pairs: Annotated[
        Path,
        typer.Option(
            help="Pair list (CSV/TSV/text with a header: two image columns and a label column under common names, "
            "docs/formats.md 'Pair lists'), as for `eval verify --pairs`."
        ),
    ],
    root: Annotated[Path | None, typer.Option(help="Folder the pair paths are relative to.")] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="The --pairs columns as A,B,LABEL (first image, second image, label) when not recognised."),
    ] = None,
    fmr: Annotated[float, typer.Option(help="Target false-match rate.")] = 1e-3,
    floor_percentile: Annotated[
        float,
        typer.Option(
            help="Quality floor: this percentile of the calibration images' quality (decisions abstain below it)."
        ),
    ] = 5.0,
    uncertainty_percentile: Annotated[
        float,
        typer.Option(
            help="ScaleFace uncertainty bound: this percentile of the calibration images' 1/s(x) (abstain above it)."
        ),
    ] = 95.0,
    aligned: Annotated[
        bool | None,
        typer.Option(
            "--aligned/--detect",
            help="--aligned: the images are aligned crops (no detection); --detect: detect and align every image; "
            "default: detect unless every image is an aligned crop of the model's input size.",
        ),
    ] = None,
    save: Annotated[bool, typer.Option(help="Store the threshold next to the model.")] = True,
    progress: ProgressOption = True,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Calibrate a model on labelled pairs and store it with the model (used by `verify`, `search`, `quality`):
    the cosine threshold at --fmr, the confidence P(genuine | similarity) (isotonic fit), the 0-100 quality
    scale (the calibration images' percentiles), the quality floor and, for ScaleFace, the uncertainty bound. For
    a model with a learned threshold (UniTSFace), also the FMR and FNMR that threshold gives on the same pairs
    (shown by `qualiface info`; it decides only with `verify --threshold learned`)."""
    from tqdm.auto import tqdm

    from qualiface.data.pairs import load_pairs_csv, pair_images
    from qualiface.models import save_calibration
    from qualiface.use import calibrate as calibrate_pairs

    face_model = open_model(model, preprocessing=preprocessing)
    pair_list = load_pairs_csv(pairs, root, columns=columns)  # InputError: one 'error:' line, exit 2
    with tqdm(total=len(pair_list), desc="faces", unit="file", disable=not progress, leave=False) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        prepared = pair_images(
            pair_list,
            input_size=face_model.input_size,
            aligned=aligned,
            detector_options=detector_options(detector),
            progress=advance,
        )
    typer.echo(f"faces: {prepared.reason}", err=True)
    warning = prepared.warning()
    if warning is not None:
        typer.echo(f"warning: {pairs}: {warning}", err=True)
    prepared.require_pairs(pairs)
    crops: Any = prepared.images  # aligned crops: an array, or ImageFiles decoding each file on access
    try:
        result = calibrate_pairs(
            face_model,
            crops,
            prepared.index_a,
            prepared.index_b,
            pair_list.issame,
            fmr,
            floor_percentile=floor_percentile,
            uncertainty_percentile=uncertainty_percentile,
        )
    except ValueError as exc:
        raise fail(str(exc), 1) from exc
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(_finite(result.summary()), indent=2, allow_nan=False))
    learned = face_model.card.learned_threshold
    if learned is not None and result.learned_threshold is not None:
        measured = result.learned_threshold.measured(learned, str(pairs))
        typer.echo(
            f"learned threshold {learned.value:.3f}: {measured.rates()}; it decides only with --threshold learned "
            f"(the threshold at FMR {fmr:g} is {result.threshold:.3f})",
            err=True,
        )
    if save:
        if face_model.path is None:
            raise fail("the model was not loaded from a file; nothing to store the calibration next to")
        extra = result.record()
        try:
            sidecar = save_calibration(
                face_model.path,
                result.threshold,
                fmr=fmr,
                pairs=str(pairs),
                extra=extra,
                model_sha256=face_model.card.weights_sha256,
            )
        except ValueError as exc:
            raise fail(str(exc), 1) from exc
        stored = ["threshold"] + [
            what
            for what, value in (
                ("confidence", result.confidence),
                ("quality scale", result.quality_scale),
                ("quality floor", result.quality_floor),
                ("uncertainty bound", result.uncertainty_bound),
                ("the learned threshold's FMR and FNMR", result.learned_threshold),
            )
            if value is not None
        ]
        typer.echo(f"stored {', '.join(stored)} (threshold {result.threshold:.6f}) in {sidecar}")


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """``None`` for every value that is not a finite number where a number stood (valid JSON only)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
