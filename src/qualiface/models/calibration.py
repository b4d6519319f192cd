"""Calibration files: a decision threshold (and the quality range) measured on labelled pairs, stored next to the
model as ``<model file>.qualiface.json`` and bound to the model by the SHA-256 of its weights file.

:func:`~qualiface.models.load_model` reads it into the model card as a ``calibrated`` threshold. A calibration
written for other weights (the model file was replaced), a threshold that is not a finite cosine in [-1, 1], or a
file that is not valid JSON is refused with an error that names the file.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qualiface.atomic import atomic_path
from qualiface.models.card import MAX_JSON_CHARS, CardError, ThresholdInfo, check_threshold, file_sha256, parse_json
from qualiface.models.formats.common import ModelLoadError
from qualiface.run_layout import RunLayout

CALIBRATION_FORMAT = "qualiface.calibration/1"
CALIBRATION_SUFFIX = ".qualiface.json"


def weights_file(model_path: str | os.PathLike[str]) -> Path:
    """The file whose bytes identify a model: the file itself, or a run directory's ``model.pt`` (else the
    ``rank0.pt`` of its newest complete checkpoint)."""
    path = Path(model_path)
    if not path.is_dir():
        return path
    layout = RunLayout(path)
    if layout.model_file.is_file():
        return layout.model_file
    folder = layout.latest_checkpoint() or path
    return folder / "rank0.pt"


def calibration_path(model_path: str | os.PathLike[str]) -> Path:
    """``<file>.qualiface.json`` next to a file; for a run directory the calibration file of its ``model.pt``,
    for another directory ``calibration.qualiface.json`` inside it."""
    path = Path(model_path)
    if path.is_dir():
        if RunLayout(path).model_file.is_file():
            return RunLayout(path).model_file.with_name(f"model.pt{CALIBRATION_SUFFIX}")
        return path / f"calibration{CALIBRATION_SUFFIX}"
    return path.with_name(path.name + CALIBRATION_SUFFIX)


def save_calibration(
    model_path: str | os.PathLike[str],
    threshold: float,
    *,
    fmr: float,
    pairs: str,
    metric: str = "cosine",
    extra: Mapping[str, Any] | None = None,
    model_sha256: str | None = None,
) -> Path:
    """Write the threshold calibrated on ``pairs`` at false-match rate ``fmr`` next to the model (atomically),
    with the SHA-256 of the model's weights file. ``extra`` adds JSON fields (``quality_floor``, ``fnmr``,
    ``n_genuine``, ``n_impostor``, ``quality_range``...); ``model_sha256`` is the weights' hash when the caller
    already has it (a loaded model's card), else it is computed. Returns the path."""
    value = check_threshold(threshold, "threshold")
    fmr_given: object = fmr  # whatever the caller passed
    if not (isinstance(fmr_given, int | float) and 0.0 < float(fmr_given) < 1.0):
        raise ValueError(f"fmr must be in (0, 1), got {fmr}")
    model = Path(model_path)
    if not model.exists():
        raise FileNotFoundError(f"{model}: no such model file or directory")
    weights = weights_file(model)
    record = {
        "format": CALIBRATION_FORMAT,
        "threshold": value,
        "fmr": float(fmr),
        "pairs": str(pairs),
        "metric": metric,
        "model": weights.name,
        "model_sha256": model_sha256 or file_sha256(weights),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **dict(extra or {}),
    }
    target = calibration_path(model)
    text = json.dumps(record, indent=2, allow_nan=False)  # NaN / Infinity are refused, never written
    with atomic_path(target) as tmp:
        tmp.write_text(text + "\n")
    return target


def load_calibration(model_path: str | os.PathLike[str], sha256: str | None = None) -> dict[str, Any] | None:
    """The calibration of ``model_path`` (``None`` without one), checked: format, a finite threshold in
    [-1, 1], a finite quality floor, and ``model_sha256`` equal to ``sha256`` (the loaded weights' hash)."""
    target = calibration_path(model_path)
    if not target.is_file():
        return None

    def refuse(what: str) -> ModelLoadError:
        return ModelLoadError(f"{target}: {what}")

    try:
        with target.open("rb") as fh:  # a bounded read: parse_json refuses more than MAX_JSON_CHARS
            record = parse_json(fh.read(MAX_JSON_CHARS + 1), "calibration file")
    except (OSError, CardError) as exc:
        raise refuse(f"unreadable calibration file ({exc}); delete it or recalibrate (qualiface calibrate)") from None
    if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT or "threshold" not in record:
        raise refuse(f"not a qualiface calibration file (expected format {CALIBRATION_FORMAT!r})")
    try:
        check_threshold(record["threshold"], "threshold")
    except CardError as exc:
        raise refuse(f"{exc}; recalibrate (qualiface calibrate)") from None
    floor = record.get("quality_floor")
    if floor is not None and (
        isinstance(floor, bool) or not isinstance(floor, int | float) or not math.isfinite(floor)
    ):
        raise refuse(f"quality_floor {floor!r} is not a finite number; recalibrate (qualiface calibrate)")
    recorded = record.get("model_sha256")
    if sha256 is not None and recorded != sha256:
        what = "has no model SHA-256" if recorded is None else f"was made for weights with SHA-256 {recorded}"
        raise refuse(
            f"{what}, but {record.get('model', 'the model')} now has SHA-256 {sha256}: the model file was replaced "
            f"or changed, so this threshold does not apply to it. Recalibrate (qualiface calibrate) or delete {target}"
        )
    return record


def calibrated_threshold(record: Mapping[str, Any]) -> ThresholdInfo:
    """The card entry of a checked calibration record."""
    return ThresholdInfo(
        value=float(record["threshold"]),
        kind="calibrated",
        metric=str(record.get("metric", "cosine")),
        fmr=float(record["fmr"]) if record.get("fmr") is not None else None,
        fmr_measured=_optional_float(record.get("fmr_measured")),
        fnmr=_optional_float(record.get("fnmr")),
        n_genuine=_optional_int(record.get("n_genuine")),
        n_impostor=_optional_int(record.get("n_impostor")),
        pairs=record.get("pairs"),
        created=record.get("created"),
    )


def _optional_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _optional_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None
