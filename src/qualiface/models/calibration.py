"""Calibration files: what labelled pairs say about a model, stored next to it as ``<model file>.qualiface.json``
and bound to the model by the SHA-256 of its weights file.

A calibration holds a decision threshold at a false-match rate, the calibrated confidence (P(genuine |
similarity) by an isotonic fit, :func:`fit_confidence`), the quality scale (raw quality onto 0–100 through the
calibration images' empirical CDF, :func:`fit_quality_scale`), the quality floor (a percentile of those images'
quality) and, for ScaleFace, the uncertainty bound. :func:`~qualiface.models.load_model` reads it into the model
card (:func:`apply_calibration`). For a model with a threshold learned in training (UniTSFace's ``b / γ``) it
also holds what that threshold gives on the calibration pairs (``learned_threshold``: FMR, FNMR and the pair
counts, :func:`check_threshold_on_pairs`), which the card's learned entry then shows. Files written before
the confidence and the scale existed still load; the card then says both are unavailable. A calibration written
for other weights (the model file was replaced), a value that is not valid (a threshold outside [-1, 1], knots
out of order, a non-finite number), or a file that is not valid JSON is refused with an error that names the file.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.atomic import atomic_path
from qualiface.eval.roc import rate_measurable
from qualiface.models.card import (
    MAX_JSON_CHARS,
    MAX_KNOTS,
    CardError,
    ConfidenceCurve,
    ModelCard,
    QualityCalibration,
    QualityScale,
    ThresholdInfo,
    check_threshold,
    file_sha256,
    parse_json,
)
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
    for key in ("quality_floor", "uncertainty_bound", "quality_floor_percentile", "uncertainty_percentile"):
        value = record.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise refuse(f"{key} {value!r} is not a finite number; recalibrate (qualiface calibrate)")
    try:
        for key, kind in (("confidence", ConfidenceCurve), ("quality_scale", QualityScale)):
            if record.get(key) is not None:
                kind.from_dict(record[key], key)
    except CardError as exc:
        raise refuse(f"{exc}; recalibrate (qualiface calibrate)") from None
    try:
        if record.get("learned_threshold") is not None:
            ThresholdCheck.from_dict(record["learned_threshold"])
    except CardError as exc:
        raise refuse(f"{exc}; recalibrate (qualiface calibrate)") from None
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


def apply_calibration(card: ModelCard, record: Mapping[str, Any]) -> ModelCard:
    """``card`` with a checked calibration record applied: the calibrated threshold, the confidence curve, the
    observed quality range, and the quality calibration (0–100 scale, floor, uncertainty bound). Each only when
    recorded: an older file leaves the confidence and the scale unavailable (``None``)."""
    card = card.with_threshold(calibrated_threshold(record))
    learned = card.learned_threshold
    if learned is not None and record.get("learned_threshold") is not None:
        check = ThresholdCheck.from_dict(record["learned_threshold"])
        if abs(check.threshold - learned.value) <= 1e-9:  # measured for this threshold (else: not measured)
            measured = check.measured(learned, record.get("pairs"), record.get("created"))
            card = replace(card, thresholds=tuple(measured if t is learned else t for t in card.thresholds))
    if record.get("confidence") is not None:
        card = replace(card, confidence=ConfidenceCurve.from_dict(record["confidence"]))
    span = record.get("quality_range")
    if card.quality and isinstance(span, list) and len(span) == 2:
        first = replace(card.quality[0], observed_range=(float(span[0]), float(span[1])))
        card = replace(card, quality=(first, *card.quality[1:]))
    method = record.get("quality_method") or card.quality_method
    if record.get("quality_floor") is not None or record.get("quality_scale") is not None:
        calibrated = QualityCalibration(
            method=str(method or "unknown"),
            source=str(record.get("quality_source") or (card.quality[0].source if card.quality else "unknown")),
            scale=None if record.get("quality_scale") is None else QualityScale.from_dict(record["quality_scale"]),
            floor=_optional_float(record.get("quality_floor")),
            floor_percentile=_optional_float(record.get("quality_floor_percentile")),
            uncertainty_bound=_optional_float(record.get("uncertainty_bound")),
            uncertainty_percentile=_optional_float(record.get("uncertainty_percentile")),
        )
        card = replace(card, quality_calibration=calibrated)
    return card


# ------------------------------------------------------------------------------------------------ fits


@dataclass(frozen=True)
class ThresholdCheck:
    """What a fixed cosine threshold gives on labelled pairs (``similarity >= threshold`` is a match).

    Attributes:
        threshold: The threshold.
        fmr: False-match rate, the share of impostor pairs at or above it (``None`` without impostor pairs).
        fnmr: False-non-match rate, the share of genuine pairs below it (``None`` without genuine pairs).
        false_matches: Impostor pairs at or above it.
        false_non_matches: Genuine pairs below it.
        n_impostor: Impostor pairs.
        n_genuine: Genuine pairs.
    """

    threshold: float
    fmr: float | None
    fnmr: float | None
    false_matches: int
    false_non_matches: int
    n_impostor: int
    n_genuine: int

    @property
    def fmr_measurable(self) -> bool:
        """Whether the impostor pairs measure the FMR (:func:`qualiface.eval.roc.rate_measurable`): ``False``
        for no false match, which says only that the FMR is below ``1 / n_impostor``."""
        return self.fmr is not None and rate_measurable(self.fmr, self.n_impostor)

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``fmr_measurable`` (what the calibration file stores)."""
        return {**asdict(self), "fmr_measurable": self.fmr_measurable}

    @classmethod
    def from_dict(cls, value: Any) -> ThresholdCheck:
        """A check as stored; :class:`CardError` naming the field (``learned_threshold.fmr`` ...)."""
        if not isinstance(value, Mapping):
            raise CardError(f"learned_threshold: expected a JSON object, got {type(value).__name__}")
        threshold = check_threshold(value.get("threshold"), "learned_threshold.threshold")
        counts = {}
        for key in ("false_matches", "false_non_matches", "n_impostor", "n_genuine"):
            count = value.get(key)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise CardError(f"learned_threshold.{key} {count!r}: expected a count (an integer >= 0)")
            counts[key] = count
        rates: dict[str, float | None] = {}
        for key in ("fmr", "fnmr"):
            rate = value.get(key)
            if rate is not None and (
                isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0
            ):
                raise CardError(f"learned_threshold.{key} {rate!r}: expected a rate in [0, 1] or null")
            rates[key] = None if rate is None else float(rate)
        return cls(threshold=threshold, fmr=rates["fmr"], fnmr=rates["fnmr"], **counts)

    def measured(self, learned: ThresholdInfo, pairs: str | None, created: str | None = None) -> ThresholdInfo:
        """``learned`` with what this check measured on ``pairs`` (what ``info`` shows next to it)."""
        return replace(
            learned,
            fmr_measured=self.fmr,
            fnmr=self.fnmr,
            n_genuine=self.n_genuine,
            n_impostor=self.n_impostor,
            pairs=pairs,
            created=created if created is not None else learned.created,
        )


def labelled_scores(similarity: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarities (float64) and labels (bool) of labelled pairs, flattened; ``ValueError`` for lengths that
    differ or a similarity that is not finite."""
    scores = np.asarray(similarity, np.float64).ravel()
    same = np.asarray(issame, bool).ravel()
    if scores.shape != same.shape:
        raise ValueError(f"{scores.size} similarities but {same.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("a calibration similarity is not finite")
    return scores, same


def check_threshold_on_pairs(similarity: np.ndarray, issame: np.ndarray, threshold: float) -> ThresholdCheck:
    """The false-match and false-non-match rates of ``threshold`` on labelled pairs: FMR = #{impostor s >= t} /
    #impostor, FNMR = #{genuine s < t} / #genuine (``None`` where there is no such pair).

    Raises:
        ValueError: Lengths that differ, or a similarity that is not finite.
    """
    scores, same = labelled_scores(similarity, issame)
    value = check_threshold(threshold, "threshold")
    impostor, genuine = scores[~same], scores[same]
    false_matches, false_non_matches = int(np.sum(impostor >= value)), int(np.sum(genuine < value))
    return ThresholdCheck(
        threshold=value,
        fmr=false_matches / impostor.size if impostor.size else None,
        fnmr=false_non_matches / genuine.size if genuine.size else None,
        false_matches=false_matches,
        false_non_matches=false_non_matches,
        n_impostor=int(impostor.size),
        n_genuine=int(genuine.size),
    )


def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted isotonic (non-decreasing) least-squares fit of ``values`` in their order, as blocks.

    Returns ``(start, value, weight)`` per block: the index of its first element, the weighted mean of its
    values and its total weight. Neighbours with equal means are pooled too, so the blocks are the fit's level
    sets and their values strictly increase.
    """
    starts: list[int] = []
    means: list[float] = []
    totals: list[float] = []
    for i, (v, w) in enumerate(zip(values.tolist(), weights.tolist(), strict=True)):
        starts.append(i)
        means.append(v)
        totals.append(w)
        while len(means) > 1 and means[-2] >= means[-1]:  # a violation (or a tie): pool the last two blocks
            w2, v2 = totals.pop(), means.pop()
            starts.pop()
            total = totals[-1] + w2
            means[-1] = (means[-1] * totals[-1] + v2 * w2) / total
            totals[-1] = total
    return np.array(starts, np.int64), np.array(means, np.float64), np.array(totals, np.float64)


def fit_confidence(similarity: np.ndarray, issame: np.ndarray, *, max_knots: int = 512) -> ConfidenceCurve:
    """P(genuine | similarity) from labelled pairs: isotonic regression by pool-adjacent-violators, each block's
    genuine rate Laplace-smoothed (``(g + 1) / (n + 2)``) and pooled again where smoothing broke the order; each
    block gives two knots, at its lowest and highest similarity, so the curve is flat across a block and linear
    in the gap between neighbouring blocks (as scikit-learn's ``IsotonicRegression`` predicts; see
    :class:`~qualiface.models.card.ConfidenceCurve`).

    Pairs with equal similarity are one point (their labels pooled), so the fit does not depend on their order.
    More than ``max_knots / 2`` blocks are merged into that many neighbouring groups (still monotone).

    Raises:
        ValueError: No genuine or no impostor pair, lengths that differ, or a similarity that is not finite.
    """
    scores, same = labelled_scores(similarity, issame)
    scores = np.clip(scores, -1.0, 1.0)  # a cosine; rounding may step past 1
    n_genuine, n_impostor = int(same.sum()), int((~same).sum())
    if n_genuine == 0 or n_impostor == 0:
        raise ValueError(
            f"the confidence needs genuine and impostor pairs, got {n_genuine} genuine and {n_impostor} impostor"
        )
    unique, inverse = np.unique(scores, return_inverse=True)
    count = np.bincount(inverse, minlength=unique.size).astype(np.float64)
    genuine = np.bincount(inverse, weights=same.astype(np.float64), minlength=unique.size)
    # 1. exact isotonic fit of the genuine rate over the distinct similarities
    starts, _, _ = pool_adjacent_violators(genuine / count, count)
    n = np.add.reduceat(count, starts)
    g = np.add.reduceat(genuine, starts)
    low, high = unique[starts], unique[np.append(starts[1:], unique.size) - 1]
    # 2. Laplace smoothing, then pooling again where a small block's smoothed rate fell out of order
    starts, _, _ = pool_adjacent_violators((g + 1.0) / (n + 2.0), n + 2.0)
    hits, tries = np.add.reduceat(g + 1.0, starts), np.add.reduceat(n + 2.0, starts)
    low, high = low[starts], high[np.append(starts[1:], high.size) - 1]
    blocks = max(1, max_knots // 2)
    if low.size > blocks:  # contiguous groups of blocks: pooled rates of ordered blocks stay ordered
        groups = np.linspace(0, low.size, blocks + 1).astype(np.int64)
        hits, tries = np.add.reduceat(hits, groups[:-1]), np.add.reduceat(tries, groups[:-1])
        low, high = low[groups[:-1]], high[groups[1:] - 1]
    rate = hits / tries
    knots_x: list[float] = []
    knots_p: list[float] = []
    for lo, hi, p in zip(low.tolist(), high.tolist(), rate.tolist(), strict=True):
        knots_x += [lo] if lo == hi else [lo, hi]
        knots_p += [p] if lo == hi else [p, p]
    return ConfidenceCurve(
        similarity=tuple(knots_x),
        probability=tuple(knots_p),
        genuine_share=n_genuine / (n_genuine + n_impostor),
        n_genuine=n_genuine,
        n_impostor=n_impostor,
    )


def fit_quality_scale(quality: np.ndarray) -> QualityScale:
    """The 0–100 scale of a model's quality from its calibration images' scores: knots at the percentiles 0, 1,
    ..., 100 (linear interpolation between order statistics, NumPy's default), tied raw values merged with the
    mean of their percents (see :class:`~qualiface.models.card.QualityScale`).

    Raises:
        ValueError: No finite score.
    """
    scores = np.asarray(quality, np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite quality score to build the quality scale on")
    percent = np.arange(101, dtype=np.float64)
    raw = np.percentile(scores, percent)
    unique, inverse = np.unique(raw, return_inverse=True)
    merged = np.bincount(inverse, weights=percent) / np.bincount(inverse)
    assert unique.size <= MAX_KNOTS
    return QualityScale(raw=tuple(unique.tolist()), percent=tuple(merged.tolist()), n_images=int(scores.size))


def _optional_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _optional_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None
