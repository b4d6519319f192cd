"""Uncertainty rejection curves as ScaleFace reports them, and pair-uncertainty combiners (docs/protocols.md,
'Uncertainty rejection curves').

Source: ``stat-ml/scale-face: face_lib/evaluation/reject_verification.py`` (``get_rejected_tar_far``),
``face_lib/utils/metrics.py`` (``ROC``, ``find_thresholds_by_FAR``) and
``face_lib/evaluation/distance_uncertainty_funcs.py`` (``name_to_uncertainty_func``).

Protocol of :func:`rejection_curve`:

1. Sort the pairs by pair uncertainty ascending; in ``mode="confidence"`` (ScaleFace's scale, larger = more
   confident) by the negated value, so the most confident come first. The sort is stable (ties keep input order);
   the reference's quicksort leaves tie order unspecified and reverses it in confidence mode.
2. For each rejected portion p keep the first ``int(N·(1 - p))`` pairs, a fraction of *all* pairs.
3. On the kept pairs, for each target FAR: impostor scores sorted descending, ``k = round(n_neg·FAR)`` (NumPy
   rounding, half to even), threshold ``neg[k-1]``, or ``neg[0] + 1e-8`` when k = 0; ``TAR = mean(score >= thr)``
   over the kept genuine pairs. The threshold is **re-estimated at every p** (as CR-FIQA's ERC, unlike the fixed
   threshold of the ISO EDC in :mod:`qualiface.eval.edc`).
4. Summary per FAR: ``sklearn.metrics.auc(portions, TAR)``, i.e. the trapezoidal area; higher is better.

:func:`accuracy_rejection_curve` gives verification accuracy against the rejected portion instead, either at one
threshold fixed for the whole curve or at the accuracy-maximising threshold of each kept set (an optimistic bound).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.edc.kept import _KeptCounter, _stable_order
from qualiface.eval.inputs import binary_labels, finite_vector, unit_interval_values
from qualiface.eval.results import Result

__all__ = [
    "PAIR_UNCERTAINTY_FUNCTIONS",
    "AccuracyRejectionCurve",
    "RejectionCurve",
    "accuracy_rejection_curve",
    "default_rejected_portions",
    "pair_uncertainty",
    "rejection_curve",
]

Mode = Literal["confidence", "uncertainty"]


def _harmonic_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    value: np.ndarray = ((x ** (-1)).mean(axis=axis)) ** (-1)
    return value


def _sum(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = a.sum(axis=1) + b.sum(axis=1)
    return value


def _squared_sum(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = a.sum(axis=1) ** 2 + b.sum(axis=1) ** 2
    return value


def _mul(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = a.prod(axis=1) * b.prod(axis=1)
    return value


def _harmonic_sum(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = _harmonic_mean(a, axis=1) + _harmonic_mean(b, axis=1)
    return value


def _harmonic_mul(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = _harmonic_mean(a, axis=1) * _harmonic_mean(b, axis=1)
    return value


def _harmonic_harmonic(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = _harmonic_mean(np.concatenate((a, b), axis=1), axis=1)
    return value


def _squared_harmonic(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = _harmonic_mean(np.concatenate((a**2, b**2), axis=1), axis=1)
    return value


def _cosine_analytic(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    if mu_a is None or mu_b is None:
        raise ValueError("pair_uncertainty 'cosine-analytic' needs the embeddings mu_a and mu_b")
    value: np.ndarray = (a * b + (mu_a**2) * b + (mu_b**2) * a).sum(axis=1)
    return value


def _min(a: np.ndarray, b: np.ndarray, mu_a: np.ndarray | None, mu_b: np.ndarray | None) -> np.ndarray:
    value: np.ndarray = np.min(np.stack([a.sum(axis=1), b.sum(axis=1)]), axis=0)
    return value


PairUncertaintyFunction = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]

PAIR_UNCERTAINTY_FUNCTIONS: dict[str, PairUncertaintyFunction] = {
    "mean": _sum,  # ScaleFace's "mean" is the sum Σσ_a + Σσ_b
    "sum": _sum,
    "squared-sum": _squared_sum,
    "mul": _mul,
    "harmonic-sum": _harmonic_sum,
    "harmonic-mul": _harmonic_mul,
    "harmonic-harmonic": _harmonic_harmonic,
    "squared-harmonic": _squared_harmonic,
    "cosine-analytic": _cosine_analytic,
    "min": _min,
}
_HARMONIC = ("harmonic-sum", "harmonic-mul", "harmonic-harmonic", "squared-harmonic")


def _sample_values(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric (N,) or (N, D) array, got shape {array.shape}, {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), first in row {row}")
    return array


def pair_uncertainty(
    uncertainty_a: ArrayLike,
    uncertainty_b: ArrayLike,
    how: str = "mean",
    *,
    mu_a: ArrayLike | None = None,
    mu_b: ArrayLike | None = None,
) -> np.ndarray:
    """Pair uncertainty from the per-sample values (N,) or per-dimension values (N, D), by ScaleFace's names.

    ``mean``/``sum``: Σσ_a + Σσ_b; ``squared-sum``: (Σσ_a)² + (Σσ_b)²; ``mul``: Πσ_a·Πσ_b; ``harmonic-sum`` /
    ``harmonic-mul``: H(σ_a) + / · H(σ_b); ``harmonic-harmonic``: H of the concatenated values; ``squared-harmonic``:
    H of the concatenated squares; ``min``: min(Σσ_a, Σσ_b); ``cosine-analytic``: Σ(σ_aσ_b + μ_a²σ_b + μ_b²σ_a)
    (needs ``mu_a``, ``mu_b``). H is the harmonic mean over the last axis.
    """
    if how not in PAIR_UNCERTAINTY_FUNCTIONS:
        raise ValueError(f"pair_uncertainty: unknown {how!r}; use one of {sorted(PAIR_UNCERTAINTY_FUNCTIONS)}")
    a = _sample_values("uncertainty_a", uncertainty_a)
    b = _sample_values("uncertainty_b", uncertainty_b)
    if a.shape != b.shape:
        raise ValueError(f"uncertainty_a has shape {a.shape} but uncertainty_b has {b.shape}")
    if how in _HARMONIC and ((a <= 0).any() or (b <= 0).any()):
        raise ValueError(f"pair_uncertainty {how!r}: the harmonic mean needs positive values")
    ma = None if mu_a is None else _sample_values("mu_a", mu_a)
    mb = None if mu_b is None else _sample_values("mu_b", mu_b)
    for name, mu in (("mu_a", ma), ("mu_b", mb)):
        if mu is not None and mu.shape != a.shape:
            raise ValueError(f"{name} has shape {mu.shape} but the uncertainties have {a.shape}")
    return PAIR_UNCERTAINTY_FUNCTIONS[how](a, b, ma, mb)


def default_rejected_portions() -> np.ndarray:
    """The portions of ScaleFace's scripts, ``seq 0 0.002 0.5``: 0, 0.002, …, 0.5 (251 values)."""
    return np.arange(251) / 500


@dataclass
class RejectionCurve(Result):
    """TAR at fixed FAR targets against the fraction of pairs rejected (per-level thresholds; docs/protocols.md,
    'Uncertainty rejection curves')."""

    mode: str
    n_pairs: int
    fars: list[float]
    portions: np.ndarray
    kept_counts: np.ndarray
    mated_counts: np.ndarray
    nonmated_counts: np.ndarray
    tar: dict[float, np.ndarray]
    achieved_far: dict[float, np.ndarray]
    thresholds: dict[float, np.ndarray]
    auc: dict[float, float]
    threshold_rule: str = "per_level"

    def rows(self) -> list[dict[str, Any]]:
        """One row per (FAR target, portion)."""
        return [
            {
                "far": far,
                "portion": float(self.portions[i]),
                "tar": float(self.tar[far][i]),
                "achieved_far": float(self.achieved_far[far][i]),
                "threshold": float(self.thresholds[far][i]),
                "kept": int(self.kept_counts[i]),
            }
            for far in self.fars
            for i in range(self.portions.size)
        ]


@dataclass
class AccuracyRejectionCurve(Result):
    """Verification accuracy against the fraction of pairs rejected, at a fixed or per-level best threshold."""

    mode: str
    threshold_rule: str
    n_pairs: int
    portions: np.ndarray
    kept_counts: np.ndarray
    accuracy: np.ndarray
    thresholds: np.ndarray
    auc: float

    def rows(self) -> list[dict[str, Any]]:
        """One row per portion."""
        return [
            {
                "portion": float(self.portions[i]),
                "accuracy": float(self.accuracy[i]),
                "threshold": float(self.thresholds[i]),
                "kept": int(self.kept_counts[i]),
            }
            for i in range(self.portions.size)
        ]


def _portions(portions: ArrayLike | None) -> np.ndarray:
    if portions is None:
        return default_rejected_portions()
    array = np.asarray(portions, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"portions: expected a non-empty 1-D array, got shape {array.shape}")
    bad = ~np.isfinite(array) | (array < 0) | (array >= 1)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"portions: must lie in [0, 1); index {first} holds {array[first]}")
    if array.size > 1 and np.any(np.diff(array) <= 0):
        raise ValueError("portions: must be strictly increasing")
    return array


def _setup(
    scores: ArrayLike, labels: ArrayLike, pair_confidence: ArrayLike, portions: ArrayLike | None, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if mode not in ("confidence", "uncertainty"):
        raise ValueError(f"mode: unknown {mode!r}; use 'confidence' (larger = better) or 'uncertainty'")
    s = finite_vector("scores", scores)
    genuine = binary_labels(labels, s.size)
    value = finite_vector("pair_confidence", pair_confidence, s.size)
    if not genuine.any() or genuine.all():
        raise ValueError("labels: need genuine (1) and impostor (0) pairs")
    p = _portions(portions)
    rank = np.empty(s.size, dtype=np.int64)
    rank[_stable_order(-value if mode == "confidence" else value)] = np.arange(s.size)
    kept = (s.size * (1 - p)).astype(np.int64)  # int(N * (1 - p)), as the reference
    return s, genuine, rank, p, kept


def rejection_curve(
    scores: ArrayLike,
    labels: ArrayLike,
    pair_confidence: ArrayLike,
    fars: float | Sequence[float] = (1e-4, 1e-3),
    portions: ArrayLike | None = None,
    *,
    mode: Mode = "confidence",
) -> RejectionCurve:
    """TAR@FAR against the rejected portion, with the threshold re-estimated at every portion (ScaleFace;
    docs/protocols.md, 'Uncertainty rejection curves').

    Args:
        scores: similarity per pair (higher = more similar).
        labels: 1 for genuine (mated) pairs, 0 for impostors.
        pair_confidence: one value per pair (see :func:`pair_uncertainty`); larger = more confident in
            ``mode="confidence"``, larger = less confident in ``mode="uncertainty"``.
        fars: FAR targets in [0, 1].
        portions: rejected portions, strictly increasing in [0, 1); default :func:`default_rejected_portions`.
        mode: ``"confidence"`` or ``"uncertainty"``.

    Returns:
        TAR, achieved FAR and threshold per FAR and portion; NaN where the kept set has no genuine or no impostor
        pair. ``auc[far]`` is the trapezoidal area over the portions (``sklearn.metrics.auc``).
    """
    s, genuine, rank, p, kept = _setup(scores, labels, pair_confidence, portions, mode)
    far_list = list(unit_interval_values("fars", fars))
    neg_order = np.argsort(-s[~genuine])
    neg = s[~genuine][neg_order]  # impostor scores, descending
    imp = _KeptCounter.from_ranks(rank[~genuine][neg_order], kept)
    gen_neg_sorted = np.sort(-s[genuine])  # negated genuine scores ascending = genuine descending
    gen = _KeptCounter.from_ranks(rank[genuine][np.argsort(-s[genuine])], kept)
    levels = np.arange(p.size)
    n_neg = imp.count(np.full(p.size, imp.n), levels)
    n_gen = gen.count(np.full(p.size, gen.n), levels)
    valid = (n_neg > 0) & (n_gen > 0)
    tar, achieved, thresholds, auc = {}, {}, {}, {}
    for far in far_list:
        k = np.round(n_neg * far).astype(np.int32)
        top = neg[np.maximum(imp.select(np.ones_like(k), levels), 0)]
        kth = neg[np.maximum(imp.select(np.maximum(k, 1), levels), 0)]
        thr = np.where(k == 0, top + 1e-8, kth)
        accepted_gen = gen.count(np.searchsorted(gen_neg_sorted, -thr, side="right"), levels)
        accepted_imp = imp.count(np.searchsorted(-neg, -thr, side="right"), levels)
        tar[far] = np.where(valid, accepted_gen / np.maximum(n_gen, 1), np.nan)
        achieved[far] = np.where(valid, accepted_imp / np.maximum(n_neg, 1), np.nan)
        thresholds[far] = np.where(valid, thr, np.nan)
        auc[far] = float(np.trapezoid(tar[far], p)) if p.size > 1 else float("nan")
    return RejectionCurve(
        mode=mode,
        n_pairs=int(s.size),
        fars=far_list,
        portions=p,
        kept_counts=kept,
        mated_counts=n_gen,
        nonmated_counts=n_neg,
        tar=tar,
        achieved_far=achieved,
        thresholds=thresholds,
        auc=auc,
    )


def accuracy_rejection_curve(
    scores: ArrayLike,
    labels: ArrayLike,
    pair_confidence: ArrayLike,
    portions: ArrayLike | None = None,
    *,
    threshold: float | Literal["per_level"] = "per_level",
    mode: Mode = "confidence",
    progress: bool = True,
) -> AccuracyRejectionCurve:
    """Verification accuracy (``s >= t`` accepts) against the rejected portion, pairs rejected as in
    :func:`rejection_curve`.

    ``threshold`` a number: one threshold for the whole curve (accuracy over the kept pairs at that threshold).
    ``threshold="per_level"``: at every portion the accuracy-maximising threshold of the kept pairs (candidates: the
    kept scores and +inf; the smallest best one is reported). That is an optimistic bound, not a held-out estimate
    like the 10-fold protocol; it costs O(N) per portion (a progress bar shows on a terminal unless
    ``progress=False``). AUC: trapezoidal over the portions.
    """
    s, genuine, rank, p, kept = _setup(scores, labels, pair_confidence, portions, mode)
    if threshold == "per_level":
        by_score = np.argsort(s, kind="stable")
        sorted_s, sorted_gen, sorted_rank = s[by_score], genuine[by_score], rank[by_score]
        new_value = np.append(True, sorted_s[1:] != sorted_s[:-1])  # cut points: first index of each score value
        accuracy = np.full(p.size, np.nan)
        thresholds = np.full(p.size, np.nan)
        from tqdm.auto import tqdm

        bar = tqdm(kept, desc="portions", disable=not progress or not sys.stderr.isatty())
        for i, limit in enumerate(bar):
            keep = sorted_rank < limit
            if not keep.any():
                continue
            gen_k = keep & sorted_gen
            imp_k = keep & ~sorted_gen
            # correct(j) = impostors below position j + genuine from j on, at cuts j that start a score value
            below_imp = np.concatenate(([0], np.cumsum(imp_k)))
            from_gen = gen_k.sum() - np.concatenate(([0], np.cumsum(gen_k)))
            correct = below_imp + from_gen
            cuts = np.append(np.flatnonzero(new_value), sorted_s.size)
            best = int(np.argmax(correct[cuts]))
            accuracy[i] = correct[cuts[best]] / keep.sum()
            thresholds[i] = sorted_s[cuts[best]] if cuts[best] < sorted_s.size else np.inf
        rule = "per_level"
    else:
        tau = float(threshold)
        if not np.isfinite(tau):
            raise ValueError(f"threshold: must be finite or 'per_level', got {threshold!r}")
        correct_ranks = np.sort(rank[(s >= tau) == genuine])
        n_right = np.searchsorted(correct_ranks, kept)  # correct pairs with rank < kept
        accuracy = np.where(kept > 0, n_right / np.maximum(kept, 1), np.nan)
        thresholds = np.full(p.size, tau)
        rule = "fixed"
    auc = float(np.trapezoid(accuracy, p)) if p.size > 1 else float("nan")
    return AccuracyRejectionCurve(
        mode=mode,
        threshold_rule=rule,
        n_pairs=int(s.size),
        portions=p,
        kept_counts=kept,
        accuracy=accuracy,
        thresholds=thresholds,
        auc=auc,
    )
