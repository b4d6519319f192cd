"""The calibration records a model card carries: the 0–100 quality scale, the confidence curve
P(genuine | similarity) and the quality floor and uncertainty bound (:class:`QualityCalibration`).

``qualiface calibrate`` fits them (:mod:`qualiface.models.calibration`) and stores them in the calibration file
next to the model; :func:`qualiface.models.load_model` reads them into :class:`~qualiface.models.card.ModelCard`
(docs/decisions.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from qualiface.models.card_errors import CardError


def _finite_numbers(values: Any, what: str) -> tuple[float, ...]:
    """``values`` as a tuple of finite floats (a JSON array of numbers), else :class:`CardError` naming ``what``."""
    if not isinstance(values, list | tuple) or not values:
        raise CardError(f"{what}: expected a non-empty array of numbers")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise CardError(f"{what}: {value!r} is not a finite number")
        out.append(float(value))
    return tuple(out)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CardError(f"{what} {value!r}: expected a count (an integer >= 0)")
    return value


#: The most knots a quality scale or a confidence curve may hold (a card stays a few KB).
MAX_KNOTS = 4096


_Record = TypeVar("_Record")


def _from_json_object(cls: type[_Record], data: Any, where: str) -> _Record:
    """``cls(**data)`` for a JSON object, or a :class:`CardError` naming ``where``."""
    if not isinstance(data, Mapping):
        raise CardError(f"{where}: expected a JSON object")
    try:
        return cls(**data)
    except TypeError as exc:
        raise CardError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class QualityScale:
    """A model's raw quality mapped onto a fixed 0–100 scale through its calibration images.

    ``scaled(q)`` is the empirical CDF of the calibration images' quality, in percent: knots at the percentiles
    0, 1, ..., 100 of those scores (``raw``, strictly increasing; tied raw values keep the mean of their percents),
    linear between knots, 0 below the lowest and 100 above the highest. It is monotone (a higher raw score never
    gets a lower scaled one), 50 is the median calibration face and ``p`` the ``p``-th percentile, so the quality
    floor at the 5th percentile is 5 on this scale. It is relative to the calibration set: the same photo gets
    different scaled values under models calibrated on different sets.

    Attributes:
        raw: Raw scores at the knots, strictly increasing.
        percent: The scaled values at the knots, non-decreasing within [0, 100].
        n_images: Calibration images the scale was measured on.
        method: How it was made (one line).
    """

    raw: tuple[float, ...]
    percent: tuple[float, ...]
    n_images: int
    method: str = "empirical CDF of the calibration images' quality, percentile knots, linear between"

    def __post_init__(self) -> None:
        raw = _finite_numbers(self.raw, "quality scale raw")
        percent = _finite_numbers(self.percent, "quality scale percent")
        if len(raw) != len(percent) or len(raw) > MAX_KNOTS:
            raise CardError(f"quality scale: {len(raw)} raw and {len(percent)} percent knots (equal, <= {MAX_KNOTS})")
        if any(b <= a for a, b in itertools.pairwise(raw)):
            raise CardError("quality scale raw: knots must be strictly increasing")
        if any(b < a for a, b in itertools.pairwise(percent)) or not 0.0 <= percent[0] <= percent[-1] <= 100:
            raise CardError("quality scale percent: knots must be non-decreasing within [0, 100]")
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "percent", percent)
        object.__setattr__(self, "n_images", _count(self.n_images, "quality scale n_images"))

    def scaled(self, raw: Any) -> Any:
        """The 0–100 value of raw score(s) (float for a number, an array for an array; NaN stays NaN)."""
        values = np.interp(np.asarray(raw, np.float64), self.raw, self.percent, left=0.0, right=100.0)
        out = np.clip(values, 0.0, 100.0)
        return float(out) if np.ndim(out) == 0 else out

    @classmethod
    def from_dict(cls, data: Any, where: str = "quality scale") -> QualityScale:
        return _from_json_object(cls, data, where)


@dataclass(frozen=True)
class ConfidenceCurve:
    """The probability that a pair is genuine given its similarity, fitted on the calibration pairs.

    A monotone (isotonic) fit: the calibration pairs sorted by similarity, pooled by pool-adjacent-violators into
    blocks whose genuine rate rises with similarity; each block's rate Laplace-smoothed, ``(g + 1) / (n + 2)``
    (never exactly 0 or 1 from a finite sample), and pooled again where smoothing broke the order. Each block
    gives two knots with its smoothed rate, at its lowest and its highest similarity: the probability is flat
    across a block, linear in the gap between two blocks (as scikit-learn's ``IsotonicRegression`` predicts) and
    stays at the extreme value beyond the extreme knots.

    The probability is a posterior under the calibration set's genuine share (``genuine_share``, the prior); for
    another prior ``π`` the odds are rescaled: ``odds' = odds · (π / (1 − π)) / (π₀ / (1 − π₀))``.

    Attributes:
        similarity: Knot similarities, strictly increasing, within [-1, 1].
        probability: Knot probabilities, non-decreasing, within (0, 1).
        genuine_share: ``n_genuine / (n_genuine + n_impostor)`` of the calibration pairs.
        n_genuine / n_impostor: Calibration pairs.
        method: How it was fitted (one line).
    """

    similarity: tuple[float, ...]
    probability: tuple[float, ...]
    genuine_share: float
    n_genuine: int
    n_impostor: int
    method: str = "isotonic regression (pool-adjacent-violators), Laplace-smoothed blocks, linear between blocks"

    def __post_init__(self) -> None:
        xs = _finite_numbers(self.similarity, "confidence similarity")
        ps = _finite_numbers(self.probability, "confidence probability")
        if len(xs) != len(ps) or len(xs) > MAX_KNOTS:
            raise CardError(f"confidence: {len(xs)} similarity and {len(ps)} probability knots (equal, <= {MAX_KNOTS})")
        if any(b <= a for a, b in itertools.pairwise(xs)) or not -1.0 <= xs[0] <= xs[-1] <= 1.0:
            raise CardError("confidence similarity: knots must be strictly increasing within [-1, 1]")
        if any(b < a for a, b in itertools.pairwise(ps)) or not 0.0 < ps[0] <= ps[-1] < 1.0:
            raise CardError("confidence probability: knots must be non-decreasing within (0, 1)")
        share: object = self.genuine_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share < 1.0:
            raise CardError(f"confidence genuine_share {share!r}: expected a number in (0, 1)")
        object.__setattr__(self, "similarity", xs)
        object.__setattr__(self, "probability", ps)
        object.__setattr__(self, "genuine_share", float(share))
        object.__setattr__(self, "n_genuine", _count(self.n_genuine, "confidence n_genuine"))
        object.__setattr__(self, "n_impostor", _count(self.n_impostor, "confidence n_impostor"))

    def probability_at(self, similarity: Any, prior: float | None = None) -> Any:
        """P(genuine | similarity) (float for a number, an array for an array), under the calibration set's genuine
        share or under ``prior`` (a genuine share in (0, 1))."""
        p = np.interp(np.asarray(similarity, np.float64), self.similarity, self.probability)
        if prior is not None:
            check_prior(prior)
            base = self.genuine_share
            odds = p / (1.0 - p) * (prior / (1.0 - prior)) / (base / (1.0 - base))
            p = odds / (1.0 + odds)
        return float(p) if np.ndim(p) == 0 else p

    @classmethod
    def from_dict(cls, data: Any, where: str = "confidence") -> ConfidenceCurve:
        return _from_json_object(cls, data, where)

    def describe(self) -> str:
        return (
            f"P(genuine | similarity), {len(self.similarity)} knots from {self.n_genuine} genuine / "
            f"{self.n_impostor} impostor pairs (genuine share {self.genuine_share:.3g}, the prior it assumes)"
        )


@dataclass(frozen=True)
class QualityCalibration:
    """What the calibration images say about the quality a model's decisions use (its trained quality, else the
    labelled embedding-norm heuristic that ``qualiface quality`` reports).

    Attributes:
        method / source: The quality calibrated (as in :class:`QualityInfo`).
        scale: Raw scores onto the fixed 0–100 scale (:class:`QualityScale`).
        floor: The raw score below which a decision abstains: the ``floor_percentile``-th percentile of the
            calibration images' quality (so ``floor_percentile`` on the 0–100 scale).
        floor_percentile: See ``floor``.
        uncertainty_bound: For ScaleFace, the uncertainty ``1 / s(x)`` above which a decision abstains: the
            ``uncertainty_percentile``-th percentile of the calibration images' uncertainty.
        uncertainty_percentile: See ``uncertainty_bound``.
    """

    method: str
    source: str
    scale: QualityScale | None = None
    floor: float | None = None
    floor_percentile: float | None = None
    uncertainty_bound: float | None = None
    uncertainty_percentile: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "quality_calibration") -> QualityCalibration:
        if not isinstance(data, Mapping):
            raise CardError(f"{where}: expected a JSON object")
        items = dict(data)
        if items.get("scale") is not None:
            items["scale"] = QualityScale.from_dict(items["scale"], f"{where} scale")
        for key in ("floor", "floor_percentile", "uncertainty_bound", "uncertainty_percentile"):
            value = items.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise CardError(f"{where} {key} {value!r}: expected a finite number")
        try:
            return cls(**items)
        except TypeError as exc:
            raise CardError(f"{where}: {exc}") from None

    def lines(self) -> list[str]:
        """The lines of ``qualiface info``."""
        out = []
        if self.scale is not None:
            median = float(np.interp(50.0, self.scale.percent, self.scale.raw))
            out.append(
                f"quality scale   {self.method} ({self.source}) on 0-100 = percent of {self.scale.n_images} "
                f"calibration images below; 50 = {median:.4g} (the median)"
            )
        else:
            out.append("quality scale   unavailable (qualiface calibrate measures it)")
        if self.floor is not None:
            pct = f", the {self.floor_percentile:g}th percentile" if self.floor_percentile is not None else ""
            out.append(f"quality floor   {self.floor:.4g}{pct} of the calibration images: below it, abstain")
        if self.uncertainty_bound is not None:
            pct = "" if self.uncertainty_percentile is None else f", the {self.uncertainty_percentile:g}th percentile"
            out.append(f"uncertainty     1/s(x) above {self.uncertainty_bound:.4g}{pct}: abstain")
        return out


def check_prior(value: Any, what: str = "prior") -> float:
    """``value`` as a float if it is a genuine share strictly within (0, 1); else :class:`CardError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise CardError(f"{what} {value!r}: expected a share of genuine pairs strictly between 0 and 1")
    return float(value)
