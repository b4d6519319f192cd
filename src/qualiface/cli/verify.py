"""``qualiface verify A B --model M``: match, non-match or abstain, with the calibrated confidence and both
qualities (raw and on the 0–100 scale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import (
    AlignedOption,
    DetectorOption,
    ModelOption,
    PreprocessingOption,
    ThresholdOption,
    detector_options,
    faces_of,
    fail,
    open_model,
)


@app.command("verify")
def verify(
    image_a: Annotated[Path, typer.Argument(help="First photo.")],
    image_b: Annotated[Path, typer.Argument(help="Second photo.")],
    model: ModelOption,
    threshold: ThresholdOption = None,
    quality_floor: Annotated[
        float | None,
        typer.Option(help="Abstain when a face's raw quality is below this (default: the calibrated floor)."),
    ] = None,
    uncertainty_bound: Annotated[
        float | None,
        typer.Option(help="ScaleFace: abstain when a face's 1/s(x) is above this (default: the calibrated bound)."),
    ] = None,
    prior: Annotated[
        float | None,
        typer.Option(
            help="Share of genuine pairs the confidence assumes (default: the calibration pairs' share), in (0, 1)."
        ),
    ] = None,
    aligned: AlignedOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Compare the largest face of A with the largest face of B: decision (match, non-match, or abstain on a face
    below the model's calibrated quality floor), similarity, confidence P(genuine | similarity), qualities."""
    from qualiface.decisions import DecisionPolicy, parse_threshold
    from qualiface.use import compare

    chosen = parse_threshold(threshold)  # InputError: one 'error:' line, exit 2
    face_model = open_model(model, preprocessing=preprocessing)
    try:
        policy = DecisionPolicy.from_model(
            face_model,
            threshold=chosen,
            quality_floor=quality_floor,
            uncertainty_bound=uncertainty_bound,
            prior=prior,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    described: dict[str, Any] | None = None
    if not aligned:
        described = detector_options(detector).describe()
    faces = [faces_of([p], aligned=aligned, progress=False, detector=detector) for p in (image_a, image_b)]
    try:
        result = compare(face_model, faces[0], faces[1], policy=policy, detector=described)
    except ValueError as exc:
        raise fail(str(exc), 1) from exc
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        _print(result, policy)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


def _print(result: Any, policy: Any) -> None:
    decision = result.decision
    words = {"match": "match (same person)", "non-match": "non-match (different people)"}
    verdict = words.get(decision.decision, decision.decision)
    origin = ""
    if decision.threshold is not None:
        origin = f" (threshold {decision.threshold:.4f} from {decision.threshold_source})"
    typer.echo(f"decision    {verdict}{origin}")
    for reason in decision.reasons:
        typer.echo(f"  because   {reason}")
    typer.echo(f"similarity  {decision.similarity:.4f} (cosine; distance 1 - similarity = {decision.distance:.4f})")
    if decision.confidence is not None:
        prior = result.policy.get("confidence_prior")
        typer.echo(f"confidence  {decision.confidence:.3f} = P(same person | similarity), genuine share {prior:.3g}")
    else:
        typer.echo("confidence  unavailable (qualiface calibrate fits it)")
    quality = result.quality
    if quality.get("method") is not None:
        parts = []
        for key in ("a", "b"):
            entry = quality[key]
            scaled = "" if entry["scaled"] is None else f"{entry['scaled']:.1f}/100 "
            parts.append(f"{key.upper()} {scaled}(raw {entry['raw']:.4g})")
        untrained = " untrained" if quality.get("source") == "embedding_norm" else ""
        scale = "" if policy.quality_scale is not None else "; no 0-100 scale without calibration"
        typer.echo(f"quality     {', '.join(parts)} ({quality['method']}{untrained}{scale})")
