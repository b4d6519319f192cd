"""ROC curve, TAR at FAR, EER and AUC for similarity scores (higher = more similar), sort-based and vectorised.

``roc_curve`` returns exactly what ``sklearn.metrics.roc_curve(labels, scores)`` returns (same points, ties grouped,
``drop_intermediate``, the leading ``(0, 0, +inf)`` point), but it sorts the scores once without an ``argsort``
and counts the genuine pairs with a ``searchsorted``/``bincount``, so that the 15.7M IJB-C pairs take about a
second and float32 scores are never copied to float64.

TAR at FAR has two selection rules (docs/protocols.md, 'TAR at FAR'):

- ``"nearest"``: the insightface IJB rule (``recognition/arcface_torch/eval_ijbc.py``): on the
  ``drop_intermediate=True`` ROC, reverse both arrays and take the TPR at the index minimising ``|fpr - far|``,
  ties going to the smallest index of the reversed arrays (the highest TPR at that FPR). The selected FPR may be
  above the target.
- ``"conservative"``: the largest TPR over all thresholds whose FPR is ``<= far`` (on the full ROC, so that a point
  that ``drop_intermediate`` removes from a sloped segment still counts).

The threshold at a false-match rate, from impostor scores alone, is :func:`threshold_at_fmr`: one function whose
``rule`` names the definition of each protocol that needs one (calibration, the fixed-threshold EDC, the IJB and
TinyFace 1:N).

Small samples (docs/protocols.md, 'Small samples'): a false-accept rate below ``1/n`` cannot be measured on ``n``
impostor comparisons (one false accept already is ``1/n``); :func:`rate_measurable` and :func:`comparisons_needed`
say so, and every result that reports a rate at a target marks the targets it cannot measure.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args, overload

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.inputs import unit_interval_values

IJB_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""The FAR targets insightface prints for IJB-B/C (``x_labels = [10 ** -i for i in range(1, 7)[::-1]]``)."""

TarMode = Literal["nearest", "conservative"]
FMRRule = Literal["at_most", "quantile", "ijb_evals", "tinyface"]
FMR_RULES: tuple[str, ...] = get_args(FMRRule)

DIR_EPSILON = 1e-5
"""Added to the highest impostor score by ``rule="tinyface"`` when the FMR allows no false match
(``find_thresholds_by_FAR``)."""


def comparisons_needed(rate: float) -> int | None:
    """The fewest impostor (non-mated) comparisons that can measure a false-accept rate ``rate``: the smallest
    ``n`` with ``rate >= 1/n``, i.e. ``ceil(1/rate)`` (``None`` for a rate of 0, which no finite set measures)."""
    if rate <= 0:
        return None
    return max(1, math.ceil((1.0 / rate) * (1 - 1e-12)))


def rate_measurable(rate: float, n: int) -> bool:
    """Whether ``n`` impostor comparisons can measure the false-accept rate ``rate``: ``rate >= 1/n``. Below it
    a single false accept is already more than ``rate``, so the operating point is set by the highest impostor
    score alone and the number reported there says nothing about ``rate``."""
    needed = comparisons_needed(rate)
    return needed is not None and n >= needed


def not_measurable_text(rate: float, n: int, what: str = "impostor pairs") -> str:
    """``"n/m (needs ≥ N impostor pairs, has n)"`` for a report cell."""
    needed = comparisons_needed(rate)
    return f"n/m (needs ≥ {needed:,} {what}, has {n:,})" if needed is not None else f"n/m (rate 0; has {n:,} {what})"


def check_scores_labels(
    scores: np.ndarray, labels: np.ndarray, *, name: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a score vector and its binary labels; returns ``(scores, labels as bool)``.

    Scores stay in their floating dtype (float32 is not promoted); integer scores become float64. Labels may be
    bool or numbers equal to 0 or 1 (1 = genuine / mated). Raises ``ValueError`` naming the problem: not 1-D,
    different lengths, empty, non-finite scores (count and first index), labels other than 0/1, a single class.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"{name} and labels must be 1-D, got shapes {scores.shape} and {labels.shape}")
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} and labels have different lengths: {scores.shape[0]} and {labels.shape[0]}")
    if scores.shape[0] == 0:
        raise ValueError(f"{name} are empty")
    if scores.dtype.kind == "f":
        if scores.dtype.itemsize < 4:
            scores = scores.astype(np.float32)
    elif scores.dtype.kind in "iub":
        scores = scores.astype(np.float64)
    else:
        raise ValueError(f"{name} must be numeric, got dtype {scores.dtype}")
    finite = np.isfinite(scores)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name}: {bad.size} non-finite value(s) (NaN or inf), first at index {int(bad[0])} ({scores[bad[0]]})"
        )
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iuf":
            raise ValueError(f"labels must be bool or 0/1 numbers, got dtype {labels.dtype}")
        wrong = (labels != 0) & (labels != 1)
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            raise ValueError(
                f"labels must be 0 or 1 (1 = genuine); {int(wrong.sum())} other value(s), first at index {first} "
                f"({labels[first]})"
            )
        labels = labels == 1
    n_pos = int(np.count_nonzero(labels))
    if n_pos == 0 or n_pos == labels.shape[0]:
        kind = "genuine (label 1)" if n_pos == labels.shape[0] else "impostor (label 0)"
        raise ValueError(f"labels hold a single class: all {labels.shape[0]} pairs are {kind}; need both classes")
    return scores, labels


@dataclass(frozen=True)
class RocCounts:
    """Cumulative counts at every distinct score, highest first (the full ROC before ``drop_intermediate``).

    Accepting ``score >= thresholds[i]`` gives ``fps[i]`` false and ``tps[i]`` true accepts. ``thresholds`` keep the
    score dtype; the leading ``(0, 0, +inf)`` point is not included.
    """

    fps: np.ndarray
    tps: np.ndarray
    thresholds: np.ndarray
    n_pos: int
    n_neg: int

    def curve(self, *, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr, tpr, thresholds)`` exactly as ``sklearn.metrics.roc_curve`` gives them (float64)."""
        fps, tps, thr = self.fps, self.tps, self.thresholds
        if drop_intermediate and fps.shape[0] > 2:
            keep = np.ones(fps.shape[0], dtype=bool)
            keep[1:-1] = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
            idx = np.flatnonzero(keep)
            fps, tps, thr = fps[idx], tps[idx], thr[idx]
        fpr = np.empty(fps.shape[0] + 1, dtype=np.float64)
        tpr = np.empty_like(fpr)
        thresholds = np.empty_like(fpr)
        fpr[0] = tpr[0] = 0.0
        thresholds[0] = np.inf
        np.divide(fps, float(self.n_neg), out=fpr[1:])
        np.divide(tps, float(self.n_pos), out=tpr[1:])
        thresholds[1:] = thr
        return fpr, tpr, thresholds


def roc_counts(scores: np.ndarray, labels: np.ndarray) -> RocCounts:
    """Sort once and count: the full ROC as :class:`RocCounts` (see :func:`roc_curve` for the conventions)."""
    scores, labels = check_scores_labels(scores, labels)
    n = scores.shape[0]
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64
    ordered = np.sort(scores)  # ascending copy in the score dtype; no argsort needed
    change = ordered[1:] != ordered[:-1]
    starts = np.empty(int(np.count_nonzero(change)) + 1, dtype=index_dtype)  # ascending start of each tie group
    starts[0] = 0
    starts[1:] = np.flatnonzero(change)
    starts[1:] += 1
    del change
    distinct = ordered[starts]  # ascending distinct scores
    del ordered
    genuine = scores[labels]
    group = np.searchsorted(distinct, genuine)  # exact: every genuine score is one of the distinct values
    per_group = np.bincount(group, minlength=distinct.shape[0]).astype(index_dtype)
    del group, genuine
    tps = np.cumsum(per_group[::-1], dtype=index_dtype)
    del per_group
    fps = np.subtract(n, starts[::-1], dtype=index_dtype)  # number of scores >= each threshold
    fps -= tps
    del starts
    n_pos = int(tps[-1])
    return RocCounts(fps=fps, tps=tps, thresholds=distinct[::-1], n_pos=n_pos, n_neg=n - n_pos)


def roc_curve(
    scores: np.ndarray, labels: np.ndarray, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of similarity ``scores`` (higher = more similar) against binary ``labels`` (1 = genuine).

    Identical to ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=...)``: one point per distinct score
    (accept ``score >= threshold``), highest threshold first, a leading point ``(fpr, tpr, threshold) =
    (0, 0, +inf)``, and with ``drop_intermediate`` the collinear intermediate points removed by sklearn's
    second-difference rule. Returns float64 ``(fpr, tpr, thresholds)``.

    Raises:
        ValueError: NaN/inf scores, labels other than 0/1, a single class, or mismatched lengths.
    """
    return roc_counts(scores, labels).curve(drop_intermediate=drop_intermediate)


def _far_list(fars: float | Iterable[float]) -> list[float]:
    values = [float(fars)] if isinstance(fars, int | float) else [float(f) for f in fars]
    if not values:
        raise ValueError("fars is empty")
    for far in values:
        if not 0.0 <= far <= 1.0:
            raise ValueError(f"FAR target {far} is outside [0, 1]")
    return values


def tar_at_far_from_roc(
    fpr: np.ndarray, tpr: np.ndarray, fars: float | Iterable[float] = IJB_FARS, *, mode: TarMode = "nearest"
) -> dict[float, float]:
    """TAR at each FAR target from a computed ROC (increasing ``fpr``, as :func:`roc_curve` returns it).

    ``mode="nearest"`` must be given the ``drop_intermediate=True`` ROC to reproduce insightface;
    ``mode="conservative"`` should be given the full ROC (``drop_intermediate=False``). See the module docstring.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size == 0:
        raise ValueError(f"fpr and tpr must be 1-D of equal, non-zero length, got {fpr.shape} and {tpr.shape}")
    targets = _far_list(fars)
    out: dict[float, float] = {}
    if mode == "nearest":
        fpr_rev, tpr_rev = fpr[::-1], tpr[::-1]
        for far in targets:
            out[far] = float(tpr_rev[int(np.argmin(np.abs(fpr_rev - far)))])  # argmin: first (smallest) index
    elif mode == "conservative":
        best = np.maximum.accumulate(tpr)
        for far in targets:
            last = int(np.searchsorted(fpr, far, side="right")) - 1
            out[far] = float(best[last]) if last >= 0 else 0.0
    else:
        raise ValueError(f"mode must be 'nearest' or 'conservative', got {mode!r}")
    return out


def tar_at_far_from_counts(
    counts: RocCounts, fars: float | Iterable[float] = IJB_FARS, *, mode: TarMode = "nearest"
) -> dict[float, float]:
    """:func:`tar_at_far` on already computed :class:`RocCounts` (one sort serves both modes)."""
    if mode == "nearest":
        fpr, tpr, _ = counts.curve(drop_intermediate=True)
        return tar_at_far_from_roc(fpr, tpr, fars, mode="nearest")
    if mode == "conservative":
        n_neg = float(counts.n_neg)
        out: dict[float, float] = {}
        for far in _far_list(fars):
            # number of thresholds whose FPR (fps / n_neg, as the curve computes it) is <= far; tps never decreases
            count = bisect.bisect_right(range(counts.fps.shape[0]), far, key=lambda j: counts.fps[j] / n_neg)
            out[far] = float(counts.tps[count - 1]) / counts.n_pos if count > 0 else 0.0
        return out
    raise ValueError(f"mode must be 'nearest' or 'conservative', got {mode!r}")


def tar_at_far(
    scores: np.ndarray,
    labels: np.ndarray,
    fars: float | Iterable[float] = IJB_FARS,
    *,
    mode: TarMode = "nearest",
) -> dict[float, float]:
    """True accept rate at each false accept rate target, ``{far: tar}`` (fractions, not %).

    ``mode="nearest"`` is the insightface IJB selection (docs/protocols.md, 'TAR at FAR'): on the
    ``drop_intermediate`` ROC, reversed, the TPR at the index minimising ``|fpr - far|`` (ties to the smallest
    reversed index, i.e. the highest TPR). ``mode="conservative"`` is the largest TPR with FPR ``<= far`` over all
    thresholds.
    """
    return tar_at_far_from_counts(roc_counts(scores, labels), fars, mode=mode)


@overload
def threshold_at_fmr(impostor_scores: ArrayLike, fmr: float, *, rule: FMRRule = "at_most") -> float: ...


@overload
def threshold_at_fmr(
    impostor_scores: ArrayLike, fmr: Sequence[float] | np.ndarray, *, rule: FMRRule = "at_most"
) -> np.ndarray: ...


def threshold_at_fmr(
    impostor_scores: ArrayLike, fmr: float | Sequence[float] | np.ndarray, *, rule: FMRRule = "at_most"
) -> float | np.ndarray:
    """The similarity threshold at a false-match rate, from the impostor (non-mated) scores alone.

    Write the ``n`` impostor scores in descending order ``s(1) >= s(2) >= ... >= s(n)``. Each rule is the definition
    of the code it reproduces; they differ in which score is the threshold, whether a match is ``s > t`` or
    ``s >= t``, how ``fmr · n`` is made an integer, and so in the FMR they achieve on these scores,
    ``#{impostor scores accepted}/n``:

    ``"at_most"`` (default; :func:`qualiface.use.calibrate`, ``qualiface calibrate``)
        ``k = floor(fmr · n)`` false matches allowed; ``t`` is the smallest float above ``s(k+1)``
        (``numpy.nextafter(s(k+1), inf)``), or ``s(n)`` when ``k >= n``; a match is ``s >= t``. The achieved FMR is
        at most ``k/n <= fmr`` (below it when ``s(k+1)`` ties with higher scores, which are then all rejected).
        Too few impostors (``n < 1/fmr``): ``k = 0``, ``t`` sits just above the highest impostor score and the
        achieved FMR is 0.
    ``"quantile"`` (the fixed-threshold EDC, ``dasec/quality-assessment-evaluation: edc.py``)
        ``t = numpy.quantile(scores, 1 - fmr)``, NumPy's default linear interpolation: at ascending position
        ``h = (n - 1)(1 - fmr)`` between the two impostor scores around it when ``h`` is not an integer; a match
        is ``s >= t``. The achieved FMR is close to ``fmr`` on either side. Too few impostors
        (``fmr < 1/(n - 1)``): ``t`` lies between the two highest scores, so the highest is accepted and the
        achieved FMR is ``1/n > fmr``.
    ``"ijb_evals"`` (IJB 1:N TPIR at FPIR, ``deepinsight/insightface: recognition/_evaluation_/ijb/ijb_evals.py``)
        ``k = int(n · fmr)`` (truncated), ``t = s(max(k, 1))``; a match is ``s > t`` (strict). The achieved FMR is
        at most ``(k - 1)/n`` (one false match fewer than allowed), 0 when ``k <= 1``.
    ``"tinyface"`` (TinyFace DIR at FPIR, ``mk-minchul/AdaFace: validation_lq/tinyface_helper.py``,
    ``find_thresholds_by_FAR``)
        ``k = round(n · fmr)`` (NumPy rounding, half to even); ``t = s(k)`` when ``k >= 1``, else
        ``s(1) + 1e-5`` (:data:`DIR_EPSILON`); a match is ``s >= t``. The achieved FMR is at least ``k/n`` (above
        it when ``s(k)`` ties with lower scores) and may exceed ``fmr`` by the rounding; 0 when ``k = 0``.

    Not covered, because they are not a function of the impostor scores alone: TAR at FAR (:func:`tar_at_far`;
    ``"nearest"`` picks a ROC point, which depends on the genuine scores too; the accepted set of
    ``"conservative"`` is that of ``"at_most"`` up to the rounding of ``fmr · n``), VAL@FAR of the 10-fold
    protocol (a threshold interpolated on a grid of training-fold FARs), the legacy IJB 1:N (the
    ``ceil(n_probes · far)``-th highest of all non-mated scores) and the rejection curves (``"tinyface"`` with
    1e-8, on the impostors kept at every level). See also docs/protocols.md, 'Threshold at a false-match rate'.

    Args:
        impostor_scores: the non-mated similarity scores (higher = more similar), 1-D, finite (not checked).
        fmr: one target or several, each in [0, 1]; the callers restrict it further where their reference does.
        rule: ``"at_most"``, ``"quantile"``, ``"ijb_evals"`` or ``"tinyface"``.

    Returns:
        The threshold (float) for one target, a float64 array for several.
    """
    if rule not in FMR_RULES:
        raise ValueError(f"rule: unknown {rule!r}; use one of {list(FMR_RULES)}")
    scores = np.asarray(impostor_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"impostor_scores: expected a non-empty 1-D array, got shape {scores.shape}")
    targets = unit_interval_values("fmr", fmr)
    one = np.ndim(fmr) == 0
    if rule == "quantile":
        if one:
            return float(np.quantile(scores, 1 - targets[0]))
        quantiles: np.ndarray = np.quantile(scores, [1 - f for f in targets])
        return quantiles
    desc = np.sort(scores)[::-1]
    n = desc.size
    if rule == "at_most":
        floors = [math.floor(f * n) for f in targets]
        values = np.array([desc[-1] if k >= n else np.nextafter(desc[k], np.inf) for k in floors])
    elif rule == "ijb_evals":
        values = desc[np.maximum((n * np.asarray(targets, dtype=np.float64)).astype(np.int64) - 1, 0)]
    else:
        rounded = [int(np.round(n * f)) for f in targets]
        values = np.array([desc[0] + DIR_EPSILON if k == 0 else desc[k - 1] for k in rounded])
    return float(values[0]) if one else values


def eer_from_counts(counts: RocCounts) -> tuple[float, float]:
    """:func:`eer` on already computed :class:`RocCounts` (a binary search: no array of the curve's length)."""
    fps, tps, n_pos, n_neg = counts.fps, counts.tps, float(counts.n_pos), float(counts.n_neg)

    def point(j: int) -> tuple[float, float]:  # (fpr, fnr) of ROC point j; point 0 is (0, 1)
        return (0.0, 1.0) if j == 0 else (fps[j - 1] / n_neg, 1.0 - tps[j - 1] / n_pos)

    def crossed(j: int) -> bool:  # FNR - FPR never increases along the curve, so this is monotone in j
        fpr, fnr = point(j)
        return fnr - fpr <= 0.0

    i = bisect.bisect_left(range(fps.shape[0] + 1), True, key=crossed)  # the last point (1, 0) is always crossed
    (fpr0, fnr0), (fpr1, fnr1) = point(i - 1), point(i)
    gap0, gap1 = fnr0 - fpr0, fnr1 - fpr1
    t = gap0 / (gap0 - gap1)
    return float(fpr0 + t * (fpr1 - fpr0)), float(counts.thresholds[i - 1])


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold, ``(eer, threshold)``.

    Definition: walk the full ROC (every distinct score as a threshold, accept ``score >= threshold``, starting
    from the point ``FPR = 0, FNR = 1``) to the first point ``i`` where ``FNR <= FPR``. The EER is where the straight
    segment between points ``i-1`` and ``i`` crosses ``FNR = FPR`` (linear interpolation; ``FNR = 1 - TPR``). It
    equals the common ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`` recipe. The threshold returned is
    the score threshold of point ``i``: the highest threshold at which ``FNR <= FPR``.
    """
    return eer_from_counts(roc_counts(scores, labels))


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve by the trapezoidal rule (as ``sklearn.metrics.auc``); ``fpr`` must be monotonic."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"fpr and tpr must be 1-D of equal length >= 2, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("fpr and tpr must be finite")
    dx = np.diff(x)
    direction = 1.0
    if np.any(dx < 0):
        if np.all(dx <= 0):
            direction = -1.0
        else:
            raise ValueError("fpr is neither increasing nor decreasing")
    return direction * float(np.trapezoid(y, x))


def decimate_roc(
    fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, *, max_points: int = 2000, min_far: float = 1e-7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A subset of ROC points for export and plots: the first point at or above each of ``max_points``
    log-spaced FPR values in ``[min_far, 1]``, plus both end points. The points are actual ROC points (never
    interpolated); TAR at FAR must be computed on the full curve, not on this one."""
    fpr = np.asarray(fpr)
    if fpr.shape[0] <= max_points:
        return fpr, np.asarray(tpr), np.asarray(thresholds)
    grid = np.logspace(np.log10(min_far), 0.0, max_points - 2)
    idx = np.unique(np.concatenate([[0, fpr.shape[0] - 1], np.searchsorted(fpr, grid).clip(0, fpr.shape[0] - 1)]))
    return fpr[idx], np.asarray(tpr)[idx], np.asarray(thresholds)[idx]
