"""Error versus discard characteristic (EDC / ERC) of face image quality, its pAUC, and reference curves.

Comparisons are sorted by pair quality, the worst fraction is discarded, and an error rate of the rest is plotted
against the discarded fraction (protocols.md §4). Three conventions give different numbers; every result names its
convention, and numbers of different conventions must not be mixed:

``"fixed_threshold"`` (the default; :func:`edc_fixed_threshold`)
    ISO/IEC 29794-1 style, exactly as ``dasec/quality-assessment-evaluation: edc.py`` (§4.2). The comparisons of one
    type only (mated for the FNM-EDC, non-mated for the FM-EDC); the x axis is the fraction of those discarded. The
    similarity threshold τ is fixed for the whole curve: ``numpy.quantile(nonmated, 1 - fmr)`` on the full
    non-mated set, ``numpy.quantile(mated, e0)`` from a starting error e0 (``quantile(nonmated, 1 - e0)`` for the
    FM-EDC), or given. FNM is ``s < τ``, FM is ``s >= τ``. Pairs are sorted by quality with a stable sort, pairs of
    equal quality are discarded together (curve points only where the quality changes), and the point (1, 0) is
    appended. pAUC(L) is the stepwise area up to the discard limit L, reported raw and minus the area under the
    theoretical best ``A*(L) = e0²/2 - max(0, e0 - L)²/2``.
``"crfiqa"`` (:func:`erc_recomputed_threshold`)
    ``fdbtrs/CR-FIQA: ERC/erc.py`` (``getFNMRFixedTH``) and ``ERC/roc.py`` (§4.3). All pairs, mated and non-mated;
    the lowest ``int(u·N)`` are discarded for u in ``numpy.arange(0, 0.98, 0.05)``, no tie grouping. Distance
    ``d = arccos(clip(s, -1, 1))/π``. At every u the threshold is re-estimated: among the unique kept distances,
    the one whose FMR ``#{impostor d <= t}/n_imp`` is nearest to the target, ties to the largest t; then
    ``FNMR = 1 - #{genuine d < t}/n_gen``. Its "AUC" is ``sklearn.metrics.auc`` (trapezoidal) over u = 0 … 0.95.
``"magface"`` (:func:`erc_recomputed_threshold` with ``rule="magface"``)
    ``IrvingMeng/MagFace: eval/eval_quality/eval_quality.py`` (§4.4). Same grid and discard; the threshold is the
    kept impostor distance at ascending index ``idx = int(int(int((n_imp - 1)/10)/10)/10)`` for FMR 1e-3 (k
    divisions for 10^-k), and ``FNMR = #{genuine d >= τ}/n_gen``. MagFace prints no AUC; we add the trapezoidal one.

Pair quality is ``min(q_a, q_b)`` in every reference (§4.1). For uncertainties pass ``higher_is_better=False``: the
pairs are then sorted by the negated value (most uncertain discarded first) and the default pair function is
``max`` (the worse sample), so that the result equals that of the negated uncertainties. ``fdbtrs/CR-FIQA`` keeps
``min`` even for PFE's σ and reverses the order; pass ``pair_quality="min"`` to reproduce that.

The references sort with NumPy's default (unstable) quicksort; here every sort is stable, so pairs of equal quality
keep their input order. That changes nothing in the fixed-threshold convention (ties are discarded together) and
makes the recomputed conventions deterministic where the references depend on the platform.

Reference curves for plots: :func:`edc_random` (expected curve of an uninformative quality) and :func:`edc_oracle`
(a quality that discards the errors first).

Everything is vectorised. The fixed threshold needs one stable sort by quality. The recomputed conventions need a
value-only sort of the qualities (to find the last level at which each pair is kept), one sort of the distances per
class, and per level O(log n) searches and O(n / 2048) work (:class:`_KeptCounter`); 1M pairs take well under
0.15 s in every convention (``bench/eval_edc.py``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.results import Result, to_plain

__all__ = [
    "CONVENTIONS",
    "DEFAULT_DISCARD_LIMITS",
    "DEFAULT_FMRS",
    "PAIR_QUALITY_FUNCTIONS",
    "EDCResult",
    "FixedThresholdEDC",
    "RecomputedThresholdERC",
    "area_under_theoretical_best",
    "edc",
    "edc_fixed_threshold",
    "edc_oracle",
    "edc_pauc",
    "edc_random",
    "erc_discard_grid",
    "erc_recomputed_threshold",
    "normalize_quality",
    "pair_quality",
]

Convention = Literal["fixed_threshold", "crfiqa", "magface"]
ScoreKind = Literal["cosine", "similarity", "distance"]
ErrorType = Literal["fnmr", "fmr"]
PairQualityFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]

CONVENTIONS: tuple[str, ...] = ("fixed_threshold", "crfiqa", "magface")
DEFAULT_FMRS: tuple[float, ...] = (1e-3, 1e-4)
DEFAULT_DISCARD_LIMITS: tuple[float, ...] = (0.2, 0.3)
SCORE_KINDS: tuple[str, ...] = ("cosine", "similarity", "distance")


def _mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b) / 2.0


PAIR_QUALITY_FUNCTIONS: dict[str, PairQualityFunction] = {
    "min": np.minimum,
    "max": np.maximum,
    "mean": _mean,
    "product": np.multiply,
}


# ----------------------------------------------------------------------------------------------- input checks


def _finite_vector(name: str, values: ArrayLike, n: int | None = None, n_name: str = "scores") -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if n is not None and array.size != n:
        raise ValueError(f"{name} has {array.size} values but {n_name} has {n}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}")
    return array


def _binary_labels(labels: ArrayLike, n: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {array.shape}")
    if array.size != n:
        raise ValueError(f"labels has {array.size} values but scores has {n}")
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf":
        raise ValueError(f"labels: expected 0/1 or booleans, got dtype {array.dtype}")
    bad = (array != 0) & (array != 1)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"labels: must be 0 (non-mated) or 1 (mated); index {first} holds {array[first].item()!r}")
    return array == 1


def _as_tuple(name: str, values: float | Sequence[float] | None, low: float, high: float) -> tuple[float, ...]:
    if values is None:
        return ()
    items = (values,) if np.ndim(values) == 0 else tuple(values)  # type: ignore[arg-type]
    out = []
    for value in items:
        value = float(value)  # type: ignore[arg-type]
        if not (low < value < high):
            raise ValueError(f"{name}: {value} is outside the open interval ({low}, {high})")
        out.append(value)
    return tuple(out)


def _discard_limits(values: float | Sequence[float]) -> tuple[float, ...]:
    items = (values,) if np.ndim(values) == 0 else tuple(values)  # type: ignore[arg-type]
    out = []
    for value in items:
        value = float(value)  # type: ignore[arg-type]
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"discard_limits: {value} is outside [0, 1]")
        out.append(value)
    return tuple(out)


def pair_quality(quality_a: ArrayLike, quality_b: ArrayLike, how: str | PairQualityFunction = "min") -> np.ndarray:
    """Combine the two sample qualities of every pair: ``min`` (the references' choice, §4.1), ``max``, ``mean``,
    ``product``, or a vectorised callable ``f(q_a, q_b) -> q_pair``."""
    a = _finite_vector("quality_a", quality_a)
    b = _finite_vector("quality_b", quality_b, a.size, "quality_a")
    return _combine(a, b, how)


def _combine(a: np.ndarray, b: np.ndarray, how: str | PairQualityFunction) -> np.ndarray:
    if callable(how):
        out = np.asarray(how(a, b), dtype=np.float64)
        if out.shape != a.shape:
            raise ValueError(f"pair_quality: the callable returned shape {out.shape}, expected {a.shape}")
        return _finite_vector("pair quality", out)
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
        return _combine(_finite_vector("quality", array, n), _finite_vector("quality_b", quality_b, n), how), name
    if array.ndim == 2:
        if array.shape != (n, 2):
            raise ValueError(f"quality: a 2-D array must have shape ({n}, 2) (sample a, sample b), got {array.shape}")
        checked = [_finite_vector(f"quality[:, {j}]", array[:, j]) for j in (0, 1)]
        return _combine(checked[0], checked[1], how), name
    return _finite_vector("quality", array, n), "given"


def normalize_quality(quality: ArrayLike, bins: int = 100) -> np.ndarray:
    """Min-max map sample qualities to the integers 0 … ``bins``: ``round(bins · (q - min)/(max - min))``, rounding
    half to even, as ``dasec/quality-assessment-evaluation: example.py`` (optional, §4.2; ISO/IEC 29794-1 clause 9).

    The minimum and maximum come from the same data, so apply it to all samples of a data set at once.
    """
    q = _finite_vector("quality", quality)
    if bins < 1:
        raise ValueError(f"bins: must be >= 1, got {bins}")
    if q.size == 0 or q.min() == q.max():
        raise ValueError("quality: min-max normalisation needs at least two different values")
    low, high = float(q.min()), float(q.max())
    return np.round(bins * ((q - low) / (high - low))).astype(np.int64)


# ----------------------------------------------------------------------------------------------- shared helpers


def erc_discard_grid() -> np.ndarray:
    """Discard fractions of the CR-FIQA and MagFace scripts: ``numpy.arange(0, 0.98, 0.05)`` (0.00 … 0.95)."""
    return np.arange(0, 0.98, 0.05)


def _stable_order(key: np.ndarray) -> np.ndarray:
    """Same as ``argsort(key, kind="stable")`` (ascending, ties in input order), about 3x faster."""
    return _stable_sort(key)[0]


def _stable_sort(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, key[order])`` with ``order`` equal to ``argsort(key, kind="stable")``.

    NumPy's default argsort (SIMD quicksort) is fast but orders ties arbitrarily; the indices inside every run of
    equal keys are then sorted, with one sort of ``run * n + index`` over the tied positions only.
    """
    n = key.size
    order = np.argsort(key)
    sorted_key = key[order]
    tie = sorted_key[1:] == sorted_key[:-1]
    if not tie.any():
        return order, sorted_key
    in_run = np.zeros(n, dtype=bool)
    in_run[1:] |= tie
    in_run[:-1] |= tie
    positions = np.flatnonzero(in_run)
    run = np.cumsum(np.concatenate(([True], ~tie)))[positions]
    composite = np.sort(run * n + order[positions])
    order[positions] = composite % n
    return order, sorted_key


def _distances(scores: np.ndarray, score_kind: str) -> np.ndarray:
    """Distances as in CR-FIQA / MagFace: ``arccos(clip(s, -1, 1))/π`` for cosine similarities, ``-s`` for other
    similarities (order-equivalent), the input itself for distances."""
    if score_kind == "cosine":
        return np.arccos(np.clip(scores, -1.0, 1.0)) / math.pi
    if score_kind == "similarity":
        return -scores
    return scores


def _check_score_kind(score_kind: str) -> None:
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind: unknown {score_kind!r}; use one of {list(SCORE_KINDS)}")


class _KeptCounter:
    """Counting over one value-sorted sequence when only the elements kept at a discard level count.

    Element ``i`` (in value order) carries a small integer ``bucket[i]`` and is kept at level ``j`` iff
    ``bucket[i] <= level_column[j]``. For vectors of queries it answers ``count(m, j) = #{i < m : kept at j}`` and
    ``select(k, j)`` = the index of the k-th (1-based) kept element. Per-column cumulative counts are stored every
    ``block`` elements (at most 2048 checkpoints), so a query costs a binary search over the checkpoints plus one
    block of work; building it is one ``bincount``.
    """

    def __init__(self, buckets: np.ndarray, n_columns: int, level_column: np.ndarray) -> None:
        self.n = n = int(buckets.size)
        self.level_column = np.asarray(level_column, dtype=np.int64)
        n_bins = n_columns + 1  # bucket values 0..n_columns; n_columns = never kept
        self.block = block = max(64, -(-n // 2048))
        rows = max(1, -(-n // block))
        padded = np.full(rows * block + block, n_columns, dtype=np.int16 if n_bins < 2**15 else np.int64)
        padded[:n] = buckets
        self.buckets = padded
        hist = np.bincount((np.arange(n) // block) * n_bins + buckets, minlength=rows * n_bins)
        per_block = np.cumsum(hist.reshape(rows, n_bins), axis=1)[:, :n_columns]
        checkpoints = np.zeros((n_columns, rows + 1), dtype=np.int64)  # [column, c] = kept among the first c*block
        checkpoints[:, 1:] = np.cumsum(per_block, axis=0).T
        self.checkpoints = checkpoints
        self.rows = rows

    @classmethod
    def from_ranks(cls, rank: np.ndarray, limits: np.ndarray) -> _KeptCounter:
        """Element i kept at level j iff ``rank[i] < limits[j]`` (ranks >= 0)."""
        limits = np.asarray(limits, dtype=np.int64)
        unique = np.unique(limits)
        # bucket = #{unique limits <= rank}, by table lookup; kept at level j iff bucket <= index of limits[j]
        top = int(rank.max()) + 1 if rank.size else 1
        edges = np.concatenate(([0], np.clip(unique, 0, top), [top]))
        buckets = np.repeat(np.arange(unique.size + 1, dtype=np.int64), np.diff(edges))[rank]
        return cls(buckets, unique.size, np.searchsorted(unique, limits))

    def count(self, m: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Kept elements among the first ``m`` (vectorised over ``m`` and ``level``)."""
        m, column = np.broadcast_arrays(np.asarray(m, dtype=np.int64), self.level_column[np.asarray(level)])
        c = m // self.block
        idx = c[..., None] * self.block + np.arange(self.block)
        kept = (self.buckets[idx] <= column[..., None]) & (idx < m[..., None])
        return self.checkpoints[column, c] + kept.sum(axis=-1)

    def select(self, k: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Index of the k-th kept element (1-based k); -1 where fewer than k (or k < 1) are kept."""
        k, column = np.broadcast_arrays(np.asarray(k, dtype=np.int64), self.level_column[np.asarray(level)])
        k, column = k.ravel(), column.ravel()
        valid = (k >= 1) & (k <= self.checkpoints[column, self.rows])
        kk = np.where(valid, k, 1)
        lo = np.zeros(kk.size, dtype=np.int64)  # first checkpoint row whose count reaches k
        hi = np.full(kk.size, self.rows, dtype=np.int64)
        while np.any(lo < hi):
            mid = (lo + hi) // 2
            reached = self.checkpoints[column, mid] >= kk
            hi = np.where(reached, mid, hi)
            lo = np.where(reached, lo, mid + 1)
        c = np.maximum(lo - 1, 0)
        idx = c[:, None] * self.block + np.arange(self.block)
        running = self.checkpoints[column, c][:, None] + np.cumsum(self.buckets[idx] <= column[:, None], axis=1)
        found = c * self.block + np.argmax(running >= kk[:, None], axis=1)
        return np.where(valid, found, -1)


# ----------------------------------------------------------------------------------------------- area functions


def edc_pauc(discard_fractions: ArrayLike, error_fractions: ArrayLike, discard_limit: float) -> float:
    """Stepwise partial area under an EDC up to ``discard_limit`` (``dasec``'s ``compute_edc_pauc``, §4.2).

    ``pAUC(L) = Σ_j y_j · (min(x_{j+1}, L) - x_j)`` over the points with ``x_j < L``, the curve being
    right-continuous steps; the last point extends to L. Not normalised.
    """
    x = np.asarray(discard_fractions, dtype=np.float64)
    y = np.asarray(error_fractions, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"edc_pauc: discard and error fractions must be 1-D of equal length, got {x.shape}, {y.shape}")
    if np.any(x[1:] <= x[:-1]):
        raise ValueError("edc_pauc: discard fractions must be strictly increasing")
    return _step_pauc(x, y, _discard_limits(discard_limit)[0])


def _step_pauc(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    if limit == 0.0:
        return 0.0
    j = int(np.searchsorted(x, limit, side="left"))  # points x[:j] lie below the limit (x is increasing)
    right = np.minimum(x[1 : j + 1], limit)
    if right.size < j:  # the last point lies below the limit: it extends to the limit
        right = np.append(right, limit)
    return float(np.sum(y[:j] * (right - x[:j])))


def area_under_theoretical_best(starting_error: float, discard_limit: float) -> float:
    """Area under ``max(0, e0 - x)`` up to ``discard_limit``: ``e0²/2 - max(0, e0 - L)²/2`` (``dasec``, §4.2)."""
    e0 = float(starting_error)
    limit = _discard_limits(discard_limit)[0]
    return e0**2 / 2 - max(0.0, e0 - limit) ** 2 / 2


def _trapezoid_pauc(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area of a sampled curve from x[0] to ``min(limit, x[-1])``, linear interpolation at the limit."""
    end = min(limit, float(x[-1]))
    if end <= x[0]:
        return 0.0
    inside = x < end
    xs = np.append(x[inside], end)
    ys = np.append(y[inside], np.interp(end, x, y))
    return float(np.trapezoid(ys, xs))


# ----------------------------------------------------------------------------------------------- result types


@dataclass
class FixedThresholdEDC(Result):
    """One fixed-threshold EDC (protocols.md §4.2) at one operating point.

    ``discard_fractions`` / ``error_fractions`` are the curve (with the appended point (1, 0));
    ``discard_counts`` the discard counts of the curve points without the appended one; ``error_counts[k]`` the
    errors among sorted positions >= k for every k in 0..n-1 (``dasec``'s outputs, for parity; left out of
    :meth:`to_dict` because it holds n values). ``threshold`` is in the units of the input scores.
    """

    operating_point: str
    error: str
    threshold: float
    starting_error: float
    comparison_count: int
    discard_fractions: np.ndarray
    error_fractions: np.ndarray
    discard_counts: np.ndarray
    error_counts: np.ndarray
    pauc: dict[float, float]
    area_best: dict[float, float]
    pauc_minus_best: dict[float, float]
    convention: str = "fixed_threshold"

    def partial_auc(self, discard_limit: float) -> float:
        """Stepwise pAUC up to ``discard_limit`` (:func:`edc_pauc`)."""
        return edc_pauc(self.discard_fractions, self.error_fractions, discard_limit)

    def to_dict(self) -> dict[str, Any]:
        """All fields except the per-position ``error_counts``."""
        plain = super().to_dict()
        plain.pop("error_counts", None)
        return plain

    def rows(self) -> list[dict[str, Any]]:
        """One row per curve point."""
        return [
            {"operating_point": self.operating_point, "discard_fraction": float(x), "error_fraction": float(y)}
            for x, y in zip(self.discard_fractions, self.error_fractions, strict=True)
        ]


@dataclass
class RecomputedThresholdERC(Result):
    """One ERC with the threshold re-estimated at every discard level (CR-FIQA §4.3 or MagFace §4.4).

    Per level: ``error_fractions`` (FNMR; NaN where the level keeps no mated or too few non-mated pairs, where the
    reference divides by zero or records nothing), ``thresholds`` (distance units), ``achieved_fmr`` (CR-FIQA:
    ``#{impostor d <= t}/n_imp`` the threshold was chosen by; MagFace: ``#{impostor d < τ}/n_imp``) and the kept
    counts. ``auc`` is CR-FIQA's number: ``sklearn.metrics.auc`` (trapezoidal) over the whole grid; ``pauc[L]`` is
    the trapezoidal area up to L (linear interpolation at L), not comparable with the stepwise §4.2 pAUC.
    """

    convention: str
    operating_point: str
    fmr_target: float
    discard_fractions: np.ndarray
    error_fractions: np.ndarray
    thresholds: np.ndarray
    achieved_fmr: np.ndarray
    kept_counts: np.ndarray
    mated_counts: np.ndarray
    nonmated_counts: np.ndarray
    auc: float
    pauc: dict[float, float]

    def partial_auc(self, discard_limit: float) -> float:
        """Trapezoidal area up to ``discard_limit`` (at most up to the last grid point)."""
        return _trapezoid_pauc(self.discard_fractions, self.error_fractions, _discard_limits(discard_limit)[0])

    def rows(self) -> list[dict[str, Any]]:
        """One row per discard level."""
        return [
            {
                "operating_point": self.operating_point,
                "discard_fraction": float(self.discard_fractions[i]),
                "error_fraction": float(self.error_fractions[i]),
                "threshold": float(self.thresholds[i]),
                "achieved_fmr": float(self.achieved_fmr[i]),
                "kept": float(self.kept_counts[i]),
            }
            for i in range(self.discard_fractions.size)
        ]


Curve = FixedThresholdEDC | RecomputedThresholdERC


@dataclass
class EDCResult(Result):
    """EDC / ERC curves of one quality method, one curve per operating point (e.g. ``"fmr=0.001"``).

    ``protocol`` states what protocols.md §8 asks every EDC number to state: fixed or re-estimated threshold, what
    the discard fraction counts, whether ties are grouped, and the kind of area.
    """

    method: str
    convention: str
    protocol: str
    pair_quality: str
    higher_is_better: bool
    n_pairs: int
    n_mated: int
    n_nonmated: int
    curves: dict[str, Curve]

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values; each curve through its own ``to_dict()``."""
        plain = to_plain({f.name: getattr(self, f.name) for f in fields(self) if f.name != "curves"})
        plain["curves"] = {label: curve.to_dict() for label, curve in self.curves.items()}
        return plain

    def rows(self) -> list[dict[str, Any]]:
        """One row per curve point of every curve."""
        return [
            {"method": self.method, "convention": self.convention, **row}
            for c in self.curves.values()
            for row in c.rows()
        ]

    def summary(self) -> dict[str, float]:
        """Scalars per operating point: starting error, pAUC (and minus A* for the fixed threshold), AUC."""
        out: dict[str, float] = {}
        for label, curve in self.curves.items():
            if isinstance(curve, FixedThresholdEDC):
                out[f"{label}/threshold"] = curve.threshold
                out[f"{label}/starting_error"] = curve.starting_error
                for limit, value in curve.pauc.items():
                    out[f"{label}/pauc@{limit:g}"] = value
                    out[f"{label}/pauc-best@{limit:g}"] = curve.pauc_minus_best[limit]
            else:
                out[f"{label}/fnmr@0"] = float(curve.error_fractions[0])
                out[f"{label}/auc"] = curve.auc
                for limit, value in curve.pauc.items():
                    out[f"{label}/pauc@{limit:g}"] = value
        return out

    def curve_points(self, operating_point: str) -> tuple[np.ndarray, np.ndarray]:
        """``(discard_fractions, error_fractions)`` of one operating point, for plotting."""
        if operating_point not in self.curves:
            raise KeyError(f"no operating point {operating_point!r}; available: {list(self.curves)}")
        curve = self.curves[operating_point]
        return curve.discard_fractions, curve.error_fractions


# ----------------------------------------------------------------------------------------------- fixed threshold


def _fixed_operating_points(
    sim: np.ndarray,
    mated: np.ndarray,
    error: str,
    fmr: tuple[float, ...],
    starting_error: tuple[float, ...],
    threshold: tuple[float, ...],
    sign: float,
) -> list[tuple[str, float]]:
    """``(label, τ in similarity units)`` for every requested operating point."""
    points: list[tuple[str, float]] = []
    if fmr:
        if not (~mated).any():
            raise ValueError("labels: no non-mated pairs (label 0); an FMR target needs them to set the threshold")
        taus = np.quantile(sim[~mated], [1 - f for f in fmr])  # one partition; same values as one call per target
        points += [(f"fmr={f:g}", float(tau)) for f, tau in zip(fmr, taus, strict=True)]
    for e0 in starting_error:
        if error == "fnmr":
            if not mated.any():
                raise ValueError("labels: no mated pairs (label 1); a starting FNMR needs them")
            points.append((f"starting_error={e0:g}", float(np.quantile(sim[mated], e0))))
        else:
            if not (~mated).any():
                raise ValueError("labels: no non-mated pairs (label 0); a starting FMR needs them")
            points.append((f"starting_error={e0:g}", float(np.quantile(sim[~mated], 1 - e0))))
    points += [(f"threshold={t:g}", sign * t) for t in threshold]
    labels = [label for label, _ in points]
    if len(set(labels)) != len(labels):
        raise ValueError(f"operating points: duplicates in {labels}")
    return points


def _fixed_curve(
    sorted_key: np.ndarray,
    starts: np.ndarray,
    sorted_sim: np.ndarray,
    tau: float,
    error: str,
    label: str,
    limits: tuple[float, ...],
    sign: float,
) -> FixedThresholdEDC:
    n = sorted_sim.size
    errors = sorted_sim < tau if error == "fnmr" else sorted_sim >= tau
    error_counts = np.cumsum(errors.view(np.int8)[::-1], dtype=np.int64)[::-1]
    x = np.empty(starts.size + 1)  # starts[-1] < n, so the point (1, 0) is always appended
    y = np.empty(starts.size + 1)
    np.divide(starts, n, out=x[:-1])
    np.divide(error_counts[starts], n - starts, out=y[:-1])
    x[-1], y[-1] = 1.0, 0.0
    return _fixed_result(label, error, sign * tau, n, x, y, starts, error_counts, limits)


def _fixed_result(
    label: str,
    error: str,
    threshold: float,
    n: int,
    x: np.ndarray,
    y: np.ndarray,
    discard_counts: np.ndarray,
    error_counts: np.ndarray,
    limits: tuple[float, ...],
) -> FixedThresholdEDC:
    e0 = float(y[0])
    pauc = {limit: _step_pauc(x, y, limit) for limit in limits}
    best = {limit: area_under_theoretical_best(e0, limit) for limit in limits}
    return FixedThresholdEDC(
        operating_point=label,
        error=error,
        threshold=float(threshold),
        starting_error=e0,
        comparison_count=int(n),
        discard_fractions=x,
        error_fractions=y,
        discard_counts=discard_counts,
        error_counts=error_counts,
        pauc=pauc,
        area_best=best,
        pauc_minus_best={limit: pauc[limit] - best[limit] for limit in limits},
    )


def _selected(mated: np.ndarray, error: str) -> np.ndarray:
    selected = mated if error == "fnmr" else ~mated
    if not selected.any():
        kind = "mated pairs (label 1); the FNM-EDC" if error == "fnmr" else "non-mated pairs (label 0); the FM-EDC"
        raise ValueError(f"labels: no {kind} is computed on them")
    return selected


# ----------------------------------------------------------------------------------------------- recomputed threshold


def _last_levels(key: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """``J[i] = #{j >= 1 : p[i] >= cuts[j]}`` where ``p[i]`` is the position of pair i in
    ``argsort(key, kind="stable")`` (``cuts`` non-decreasing, ``cuts[0] = 0``, all below ``key.size``).

    Avoids the full argsort: a value-only sort gives the key at every cut; a pair whose key differs from all of
    them is placed by comparisons, and only pairs whose key equals a cut's key need their stable position.
    """
    n = key.size
    sorted_key = np.sort(key)
    levels = np.zeros(n, dtype=np.int8)
    tied = np.zeros(n, dtype=bool)
    tied_values: set[float] = set()
    for cut in cuts[1:]:
        value = sorted_key[cut]
        if (cut == 0 or sorted_key[cut - 1] != value) and (cut + 1 == n or sorted_key[cut + 1] != value):
            levels += key >= value  # the only pair with this key sits exactly at the cut
        else:
            levels += key > value
            if value not in tied_values:
                tied_values.add(value)
                tied |= key == value
    if tied_values:
        idx = np.flatnonzero(tied)  # ascending, so a stable sort of their keys keeps input order inside ties
        tied_keys = key[idx]
        order = np.argsort(tied_keys, kind="stable")
        sorted_tied = tied_keys[order]
        first = np.searchsorted(sorted_tied, sorted_tied, side="left")  # start of each run of equal keys
        position = np.searchsorted(sorted_key, sorted_tied, side="left") + np.arange(idx.size) - first
        levels[idx[order]] = np.searchsorted(cuts[1:], position, side="right")
    return levels


def _protocol(convention: str, error: str) -> str:
    if convention == "fixed_threshold":
        kind = "mated comparisons (FNM-EDC)" if error == "fnmr" else "non-mated comparisons (FM-EDC)"
        return (
            f"threshold fixed for the whole curve; discard fraction of the {kind}; pairs of equal quality discarded "
            "together; stepwise pAUC, raw and minus the area under the theoretical best (dasec edc.py, ISO/IEC "
            "29794-1 style)"
        )
    if convention == "crfiqa":
        return (
            "threshold re-estimated at every discard level (kept distance with the nearest FMR, FMR with <=, FNMR "
            "with <); discard int(u*N) of all pairs, u = 0, 0.05, ..., 0.95; ties not grouped; trapezoidal AUC over "
            "the grid and trapezoidal pAUC (CR-FIQA ERC/erc.py)"
        )
    return (
        "threshold re-estimated at every discard level (kept impostor distance at idx = (n_imp - 1) // 10^k, FNMR "
        "with >=); discard int(u*N) of all pairs, u = 0, 0.05, ..., 0.95; ties not grouped; trapezoidal AUC and "
        "pAUC added here, MagFace prints none (MagFace eval_quality.py)"
    )


def _magface_divisions(fmr: float) -> int:
    k = round(-math.log10(fmr))
    if not math.isclose(fmr, 10.0**-k, rel_tol=1e-9):
        raise ValueError(f"fmr: the MagFace rule only knows FMR = 10^-k (1e-2, 1e-3, ...), got {fmr}")
    return k


def _recomputed_curves(
    dist: np.ndarray,
    mated: np.ndarray,
    key: np.ndarray,
    fmrs: tuple[float, ...],
    rule: str,
    limits: tuple[float, ...],
) -> dict[str, RecomputedThresholdERC]:
    """CR-FIQA (§4.3) or MagFace (§4.4) ERCs for every FMR target, vectorised over levels and targets."""
    n = dist.size
    grid = erc_discard_grid()
    cuts = (grid * n).astype(np.int64)  # int(u * N), as the references
    # a pair is kept at the levels j <= J (its last level); counter buckets are L-1-J, level j is column L-1-j
    last = grid.size - 1
    bucket = (last - _last_levels(key, cuts)).astype(np.int8)
    columns = last - np.arange(grid.size)

    def side(mask: np.ndarray) -> tuple[np.ndarray, _KeptCounter]:
        values = dist[mask]
        by_value = np.argsort(values)
        return values[by_value], _KeptCounter(bucket[mask][by_value], grid.size, columns)

    imp_vals, imp = side(~mated)
    gen_vals, gen = side(mated)
    levels = np.arange(grid.size)
    n_imp_level = imp.count(np.full(grid.size, imp.n), levels)
    n_gen_level = gen.count(np.full(grid.size, gen.n), levels)

    n_targets = len(fmrs)
    lev = np.repeat(levels, n_targets)
    op = np.tile(np.asarray(fmrs, dtype=np.float64), grid.size)
    ni, ng = n_imp_level[lev], n_gen_level[lev]
    niv, ngv = np.maximum(ni, 1), np.maximum(ng, 1)

    def imp_value(k: np.ndarray) -> np.ndarray:
        return imp_vals[np.maximum(imp.select(k, lev), 0)]

    def gen_value(k: np.ndarray) -> np.ndarray:
        return gen_vals[np.maximum(gen.select(k, lev), 0)]

    def imp_count(values: np.ndarray, side_: Literal["left", "right"]) -> np.ndarray:
        return imp.count(np.searchsorted(imp_vals, values, side=side_), lev)

    def gen_below(values: np.ndarray) -> np.ndarray:
        return gen.count(np.searchsorted(gen_vals, values, side="left"), lev)

    if rule == "crfiqa":
        valid = (ni > 0) & (ng > 0)
        m_hi, m_lo = _nearest_counts(op, niv)
        c_hi = imp_count(imp_value(m_hi), "right")  # FMR counted with <=: count at the end of the tie run
        v_next = imp_value(np.minimum(m_lo + 1, niv))
        c_lo = np.where(m_lo >= niv, niv, imp_count(v_next, "left"))
        lo_ok = (c_lo > 0) | (gen_below(v_next) > 0)  # FMR 0 is reachable only through a genuine distance
        diff_hi = np.abs(c_hi / niv - op)
        diff_lo = np.abs(c_lo / niv - op)
        chosen = np.where(lo_ok & (diff_lo < diff_hi), c_lo, c_hi)  # ties go to the larger threshold
        full = chosen >= niv
        v_up = imp_value(np.minimum(chosen + 1, niv))
        best_imp = np.where(chosen >= 1, imp_value(np.maximum(chosen, 1)), -np.inf)
        g_up = gen_below(v_up)
        best_gen = np.where(g_up >= 1, gen_value(np.maximum(g_up, 1)), -np.inf)
        top = np.maximum(imp_value(niv), gen_value(ngv))
        t = np.where(full, top, np.maximum(best_imp, best_gen))
        fnmr = 1 - gen_below(t) / ngv
        achieved = chosen / niv
    else:
        divisions = np.tile(np.asarray([_magface_divisions(f) for f in fmrs], dtype=np.int64), grid.size)
        idx = (ni - 1) // 10**divisions
        before_last = np.where(divisions > 0, (ni - 1) // 10 ** np.maximum(divisions - 1, 0), ni)
        valid = (ni > 0) & (ng > 0) & (before_last >= 1)  # the reference breaks at idx == 0 before recording
        t = imp_value(np.maximum(idx + 1, 1))
        fnmr = (ngv - gen_below(t)) / ngv
        achieved = imp_count(t, "left") / niv

    shape = (grid.size, n_targets)
    fnmr = np.where(valid, fnmr, np.nan).reshape(shape)
    t = np.where(valid, t, np.nan).reshape(shape)
    achieved = np.where(valid, achieved, np.nan).reshape(shape)
    curves = {}
    for j, target in enumerate(fmrs):
        y = fnmr[:, j].copy()
        curves[f"fmr={target:g}"] = RecomputedThresholdERC(
            convention=rule,
            operating_point=f"fmr={target:g}",
            fmr_target=target,
            discard_fractions=grid.copy(),
            error_fractions=y,
            thresholds=t[:, j].copy(),
            achieved_fmr=achieved[:, j].copy(),
            kept_counts=n - cuts,
            mated_counts=n_gen_level.copy(),
            nonmated_counts=n_imp_level.copy(),
            auc=float(np.trapezoid(y, grid)),
            pauc={limit: _trapezoid_pauc(grid, y, limit) for limit in limits},
        )
    return curves


def _nearest_counts(op: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest m in [1, n] with float(m/n) >= op, and largest m in [0, n] with float(m/n) <= op."""
    steps = np.arange(-2, 3)
    up = np.clip(np.ceil(op * n)[:, None].astype(np.int64) + steps, 1, n[:, None])
    up = np.concatenate([up, n[:, None]], axis=1)
    m_hi = np.where(up / n[:, None] >= op[:, None], up, np.iinfo(np.int64).max).min(axis=1)
    down = np.clip(np.floor(op * n)[:, None].astype(np.int64) + steps, 0, n[:, None])
    down = np.concatenate([down, np.zeros_like(n)[:, None]], axis=1)
    m_lo = np.where(down / n[:, None] <= op[:, None], down, -1).max(axis=1)
    return m_hi, m_lo


# ----------------------------------------------------------------------------------------------- public API


def edc(
    scores: ArrayLike,
    labels: ArrayLike,
    quality: ArrayLike,
    quality_b: ArrayLike | None = None,
    *,
    convention: Convention = "fixed_threshold",
    pair_quality: str | PairQualityFunction | None = None,
    higher_is_better: bool = True,
    fmr: float | Sequence[float] | None = None,
    starting_error: float | Sequence[float] | None = None,
    threshold: float | Sequence[float] | None = None,
    discard_limits: float | Sequence[float] = DEFAULT_DISCARD_LIMITS,
    error: ErrorType = "fnmr",
    score_kind: ScoreKind = "cosine",
    method: str = "quality",
) -> EDCResult:
    """EDC / ERC of one quality method in the chosen convention (see the module docstring and protocols.md §4).

    Args:
        scores: comparison score per pair; cosine similarity by default (see ``score_kind``).
        labels: 1 (or True) for mated pairs, 0 for non-mated.
        quality: pair quality (N,), or sample qualities (N, 2), or sample a's qualities with ``quality_b``.
        quality_b: sample b's qualities when ``quality`` holds sample a's.
        convention: ``"fixed_threshold"`` (§4.2), ``"crfiqa"`` (§4.3) or ``"magface"`` (§4.4).
        pair_quality: how sample qualities combine: ``"min"``, ``"max"``, ``"mean"``, ``"product"`` or a callable;
            default ``min``, or ``max`` when ``higher_is_better=False``.
        higher_is_better: False for uncertainties: sorts by the negated value, so the most uncertain go first.
        fmr: FMR targets; default (1e-3, 1e-4) when no other operating point is given. Fixed threshold:
            ``τ = numpy.quantile(nonmated, 1 - fmr)`` on the full set; recomputed conventions: the target per level.
        starting_error: fixed threshold only: τ from the starting FNMR (``quantile(mated, e0)``) or FMR.
        threshold: fixed threshold only: τ given, in the units of ``scores``.
        discard_limits: limits L of the reported pAUC (fixed threshold: stepwise; others: trapezoidal).
        error: fixed threshold only: ``"fnmr"`` (FNM-EDC on mated pairs) or ``"fmr"`` (FM-EDC on non-mated).
        score_kind: ``"cosine"`` (similarity in [-1, 1]; the recomputed conventions use arccos(s)/π as the
            references), ``"similarity"`` (any similarity; recomputed conventions use -s) or ``"distance"`` (lower
            is more similar; the fixed threshold works on -d, FNM is then d > τ).
        method: name of the quality method, carried into the result.

    Raises:
        ValueError: for non-finite inputs, lengths that differ, labels other than 0/1, a missing class, targets or
            limits out of range, an unknown convention or option, or options that the convention does not use.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: unknown {convention!r}; use one of {list(CONVENTIONS)}")
    _check_score_kind(score_kind)
    if error not in ("fnmr", "fmr"):
        raise ValueError(f"error: unknown {error!r}; use 'fnmr' or 'fmr'")
    s = _finite_vector("scores", scores)
    mated = _binary_labels(labels, s.size)
    q, pair_name = _resolve_quality(quality, quality_b, s.size, pair_quality, higher_is_better)
    key = q if higher_is_better else -q
    fmrs = _as_tuple("fmr", fmr, 0.0, 1.0)
    e0s = _as_tuple("starting_error", starting_error, 0.0, 1.0)
    if threshold is None:
        thresholds: tuple[float, ...] = ()
    else:
        thresholds = tuple(float(t) for t in ((threshold,) if np.ndim(threshold) == 0 else threshold))  # type: ignore[union-attr]
        if not all(math.isfinite(t) for t in thresholds):
            raise ValueError(f"threshold: non-finite value in {thresholds}")
    if fmr is None and not e0s and not thresholds:
        fmrs = DEFAULT_FMRS
    limits = _discard_limits(discard_limits)
    common = {
        "method": method,
        "convention": convention,
        "protocol": _protocol(convention, error),
        "pair_quality": pair_name,
        "higher_is_better": higher_is_better,
        "n_pairs": int(s.size),
        "n_mated": int(mated.sum()),
        "n_nonmated": int((~mated).sum()),
    }
    if convention == "fixed_threshold":
        sign = -1.0 if score_kind == "distance" else 1.0
        sim = -s if score_kind == "distance" else s
        points = _fixed_operating_points(sim, mated, error, fmrs, e0s, thresholds, sign)
        if not points:
            raise ValueError("no operating point: give fmr, starting_error or threshold")
        selected = _selected(mated, error)
        key_sel, sim_sel = (key, sim) if selected.all() else (key[selected], sim[selected])
        order, sorted_key = _stable_sort(key_sel)
        sorted_sim = sim_sel[order]
        starts = np.concatenate(([0], np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1))
        curves: dict[str, Curve] = {
            label: _fixed_curve(sorted_key, starts, sorted_sim, tau, error, label, limits, sign)
            for label, tau in points
        }
        return EDCResult(curves=curves, **common)  # type: ignore[arg-type]
    if e0s or thresholds:
        raise ValueError(f"convention {convention!r} re-estimates the threshold; starting_error/threshold do not apply")
    if error != "fnmr":
        raise ValueError(f"convention {convention!r} computes FNMR only; error={error!r} does not apply")
    if not fmrs:
        raise ValueError("fmr: give at least one FMR target")
    if not mated.any() or mated.all():
        raise ValueError(f"labels: convention {convention!r} needs mated (1) and non-mated (0) pairs")
    if convention == "magface":
        for f in fmrs:
            _magface_divisions(f)
    dist = _distances(s, score_kind)
    curves = dict(_recomputed_curves(dist, mated, key, fmrs, convention, limits))
    return EDCResult(curves=curves, **common)  # type: ignore[arg-type]


def edc_fixed_threshold(
    scores: ArrayLike, labels: ArrayLike, quality: ArrayLike, quality_b: ArrayLike | None = None, **kwargs: Any
) -> EDCResult:
    """The ISO-style EDC with a threshold fixed for the whole curve: :func:`edc` with ``convention="fixed_threshold"``
    (``dasec/quality-assessment-evaluation: edc.py``, protocols.md §4.2)."""
    return edc(scores, labels, quality, quality_b, convention="fixed_threshold", **kwargs)


def erc_recomputed_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    quality: ArrayLike,
    quality_b: ArrayLike | None = None,
    *,
    rule: Literal["crfiqa", "magface"] = "crfiqa",
    **kwargs: Any,
) -> EDCResult:
    """ERC with the threshold re-estimated at every discard level: :func:`edc` with ``convention=rule``.

    ``rule="crfiqa"``: ``fdbtrs/CR-FIQA: ERC/erc.py`` (§4.3); ``rule="magface"``: ``IrvingMeng/MagFace:
    eval/eval_quality/eval_quality.py`` (§4.4).
    """
    if rule not in ("crfiqa", "magface"):
        raise ValueError(f"rule: unknown {rule!r}; use 'crfiqa' or 'magface'")
    return edc(scores, labels, quality, quality_b, convention=rule, **kwargs)


# ----------------------------------------------------------------------------------------------- reference curves


def _reference_setup(
    scores: ArrayLike, labels: ArrayLike, convention: str, score_kind: str
) -> tuple[np.ndarray, np.ndarray]:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: unknown {convention!r}; use one of {list(CONVENTIONS)}")
    _check_score_kind(score_kind)
    s = _finite_vector("scores", scores)
    return s, _binary_labels(labels, s.size)


def edc_oracle(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    convention: Convention = "fixed_threshold",
    fmr: float | Sequence[float] | None = None,
    starting_error: float | Sequence[float] | None = None,
    threshold: float | Sequence[float] | None = None,
    discard_limits: float | Sequence[float] = DEFAULT_DISCARD_LIMITS,
    error: ErrorType = "fnmr",
    score_kind: ScoreKind = "cosine",
) -> EDCResult:
    """The ideal (oracle) curve: a quality that discards the errors first, evaluated like :func:`edc`.

    The oracle quality of a pair is the rank of its margin to the operating threshold of the full set (mated:
    ``s - τ``; non-mated: ``τ - s``; in distance units for the recomputed conventions), ties broken by input
    order. In the fixed-threshold convention this discards the errors one by one first, so the curve is
    ``max(e - k, 0)/(n - k)`` at k discarded. In the recomputed conventions the threshold of the full set for each
    FMR target is used; the curve is then a reference, not a proven lower bound.
    """
    s, mated = _reference_setup(scores, labels, convention, score_kind)
    base = edc(
        s, mated, np.zeros(s.size), convention=convention, fmr=fmr, starting_error=starting_error,
        threshold=threshold, discard_limits=discard_limits, error=error, score_kind=score_kind, method="oracle",
    )  # fmt: skip
    curves: dict[str, Curve] = {}
    for label, curve in base.curves.items():
        if isinstance(curve, FixedThresholdEDC):
            sim = -s if score_kind == "distance" else s
            tau = -curve.threshold if score_kind == "distance" else curve.threshold
            margin = np.where(mated, sim - tau, tau - sim)
            chosen = {"threshold": curve.threshold}
        else:
            dist = _distances(s, score_kind)
            margin = np.where(mated, curve.thresholds[0] - dist, dist - curve.thresholds[0])
            chosen = {"fmr": curve.fmr_target}
        rank = np.empty(s.size)
        rank[_stable_order(margin)] = np.arange(s.size)
        result = edc(
            s, mated, rank, convention=convention, discard_limits=discard_limits, error=error,
            score_kind=score_kind, method="oracle", **chosen,  # type: ignore[arg-type]
        )  # fmt: skip
        only = next(iter(result.curves.values()))
        only.operating_point = label
        curves[label] = only
    base.curves = curves
    base.pair_quality = "oracle"
    return base


def edc_random(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    convention: Convention = "fixed_threshold",
    fmr: float | Sequence[float] | None = None,
    starting_error: float | Sequence[float] | None = None,
    threshold: float | Sequence[float] | None = None,
    discard_limits: float | Sequence[float] = DEFAULT_DISCARD_LIMITS,
    error: ErrorType = "fnmr",
    score_kind: ScoreKind = "cosine",
    n_permutations: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> EDCResult:
    """The expected curve of a quality that carries no information (random order), evaluated like :func:`edc`.

    Fixed threshold: analytic. A uniformly random subset of the n comparisons keeps the error fraction e0 in
    expectation, so the curve is e0 on [0, 1) with the point (1, 0), and pAUC(L) = e0·L. Recomputed conventions:
    the threshold moves with the kept set, so the curve is the mean over ``n_permutations`` random orders drawn
    from ``numpy.random.default_rng(seed)`` (thresholds, achieved FMRs and counts are averaged too).
    """
    s, mated = _reference_setup(scores, labels, convention, score_kind)
    if n_permutations < 1:
        raise ValueError(f"n_permutations: must be >= 1, got {n_permutations}")
    options: dict[str, Any] = {
        "convention": convention, "fmr": fmr, "starting_error": starting_error, "threshold": threshold,
        "discard_limits": discard_limits, "error": error, "score_kind": score_kind, "method": "random",
    }  # fmt: skip
    base = edc(s, mated, np.zeros(s.size), **options)
    base.pair_quality = "random"
    limits = _discard_limits(discard_limits)
    if convention == "fixed_threshold":
        for label, curve in base.curves.items():
            e0 = curve.starting_error
            n = curve.comparison_count
            base.curves[label] = _fixed_result(
                label, curve.error, curve.threshold, n, np.array([0.0, 1.0]), np.array([e0, 0.0]),
                np.array([0]), curve.error_counts[:1].copy(), limits,
            )  # fmt: skip
        return base
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    runs = []
    bar = tqdm(range(n_permutations), desc="random order", disable=not progress or not sys.stderr.isatty())
    for _ in bar:
        runs.append(edc(s, mated, rng.permutation(s.size).astype(np.float64), **options).curves)
    for label, curve in base.curves.items():
        assert isinstance(curve, RecomputedThresholdERC)
        for name in ("error_fractions", "thresholds", "achieved_fmr", "mated_counts", "nonmated_counts"):
            setattr(curve, name, np.mean([getattr(run[label], name) for run in runs], axis=0))
        curve.auc = float(np.trapezoid(curve.error_fractions, curve.discard_fractions))
        curve.pauc = {limit: curve.partial_auc(limit) for limit in limits}
    return base
