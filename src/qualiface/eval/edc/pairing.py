"""Pair quality: the two sample qualities of a comparison combined into one, and the sort key of every comparison
(docs/protocols.md, 'Pair quality').

``min(q_a, q_b)`` is the choice of every reference. For uncertainties (``higher_is_better=False``) the pairs are
sorted by the negated value and the default pair function is ``max`` (the worse sample).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.inputs import binary_labels, finite_vector

PairQualityFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a + b) / 2.0
    return out


PAIR_QUALITY_FUNCTIONS: dict[str, PairQualityFunction] = {
    "min": np.minimum,
    "max": np.maximum,
    "mean": _mean,
    "product": np.multiply,
}


def pair_quality(quality_a: ArrayLike, quality_b: ArrayLike, how: str | PairQualityFunction = "min") -> np.ndarray:
    """Combine the two sample qualities of every pair: ``min`` (the references' choice; docs/protocols.md,
    'Pair quality'), ``max``, ``mean``, ``product``, or a vectorised callable ``f(q_a, q_b) -> q_pair``."""
    a = finite_vector("quality_a", quality_a)
    b = finite_vector("quality_b", quality_b, a.size, "quality_a")
    return _combine(a, b, how)


def _combine(a: np.ndarray, b: np.ndarray, how: str | PairQualityFunction) -> np.ndarray:
    if callable(how):
        out = np.asarray(how(a, b), dtype=np.float64)
        if out.shape != a.shape:
            raise ValueError(f"pair_quality: the callable returned shape {out.shape}, expected {a.shape}")
        return finite_vector("pair quality", out)
    if how not in PAIR_QUALITY_FUNCTIONS:
        raise ValueError(f"pair_quality: unknown function {how!r}; use one of {sorted(PAIR_QUALITY_FUNCTIONS)}")
    return PAIR_QUALITY_FUNCTIONS[how](a, b)


def _resolve_quality(
    quality: ArrayLike,
    quality_b: ArrayLike | None,
    n: int,
    how: str | PairQualityFunction | None,
    higher_is_better: bool,
) -> tuple[np.ndarray, str]:
    """Pair quality (N,) and the name of the pair function used ("given" when already per pair)."""
    how = how if how is not None else ("min" if higher_is_better else "max")
    name = how if isinstance(how, str) else getattr(how, "__name__", "callable")
    array = np.asarray(quality)
    if quality_b is not None:
        return _combine(finite_vector("quality", array, n), finite_vector("quality_b", quality_b, n), how), name
    if array.ndim == 2:
        if array.shape != (n, 2):
            raise ValueError(f"quality: a 2-D array must have shape ({n}, 2) (sample a, sample b), got {array.shape}")
        checked = [finite_vector(f"quality[:, {j}]", array[:, j]) for j in (0, 1)]
        return _combine(checked[0], checked[1], how), name
    return finite_vector("quality", array, n), "given"


def _comparisons(
    scores: ArrayLike,
    labels: ArrayLike,
    quality: ArrayLike,
    quality_b: ArrayLike | None,
    how: str | PairQualityFunction | None,
    higher_is_better: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Checked ``(scores, mated, sort key, pair function name)``: the key sorts the worst pair first (the pair
    quality, negated when ``higher_is_better`` is False)."""
    s = finite_vector("scores", scores)
    mated = binary_labels(labels, s.size)
    q, pair_name = _resolve_quality(quality, quality_b, s.size, how, higher_is_better)
    return s, mated, q if higher_is_better else -q, pair_name


def normalize_quality(quality: ArrayLike, bins: int = 100) -> np.ndarray:
    """Min-max map sample qualities to the integers 0 … ``bins``: ``round(bins · (q - min)/(max - min))``, rounding
    half to even, as ``dasec/quality-assessment-evaluation: example.py`` (optional; docs/protocols.md, 'Pair
    quality'; ISO/IEC 29794-1 clause 9).

    The minimum and maximum come from the same data, so apply it to all samples of a data set at once.
    """
    q = finite_vector("quality", quality)
    if bins < 1:
        raise ValueError(f"bins: must be >= 1, got {bins}")
    if q.size == 0 or q.min() == q.max():
        raise ValueError("quality: min-max normalisation needs at least two different values")
    low, high = float(q.min()), float(q.max())
    return np.round(bins * ((q - low) / (high - low))).astype(np.int64)
