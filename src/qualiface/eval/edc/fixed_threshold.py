"""The fixed-threshold EDC, ISO/IEC 29794-1 style, exactly as ``dasec/quality-assessment-evaluation: edc.py``
(docs/protocols.md, 'Fixed-threshold EDC').

The comparisons of one type only (mated for the FNM-EDC, non-mated for the FM-EDC); the x axis is the fraction of
those discarded. The similarity threshold τ is fixed for the whole curve: ``numpy.quantile(nonmated, 1 - fmr)`` on
the full non-mated set, ``numpy.quantile(mated, e0)`` from a starting error e0 (``quantile(nonmated, 1 - e0)`` for
the FM-EDC), or given. FNM is ``s < τ``, FM is ``s >= τ``. Pairs are sorted by quality with a stable sort, pairs of
equal quality are discarded together (curve points only where the quality changes), and the point (1, 0) is
appended. pAUC(L) is the stepwise area up to the discard limit L, reported raw and minus the area under the
theoretical best ``A*(L) = e0²/2 - max(0, e0 - L)²/2`` (docs/protocols.md, 'pAUC').
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.edc.inputs import (
    DEFAULT_DISCARD_LIMITS,
    DEFAULT_FMRS,
    ErrorType,
    ScoreKind,
    fixed_threshold_options,
)
from qualiface.eval.edc.kept import _stable_sort
from qualiface.eval.edc.pairing import PairQualityFunction, _comparisons
from qualiface.eval.edc.pauc import _step_pauc, area_under_theoretical_best
from qualiface.eval.edc.results import Curve, EDCResult, FixedThresholdEDC
from qualiface.eval.roc import comparisons_needed, rate_measurable, threshold_at_fmr


def edc_fixed_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    quality: ArrayLike,
    quality_b: ArrayLike | None = None,
    *,
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
    """The ISO-style EDC with a threshold fixed for the whole curve (``dasec/quality-assessment-evaluation:
    edc.py``; docs/protocols.md, 'Fixed-threshold EDC'). :func:`qualiface.eval.edc.edc` with
    ``convention="fixed_threshold"`` gives the same result.

    Args:
        scores: comparison score per pair; cosine similarity by default (see ``score_kind``).
        labels: 1 (or True) for mated pairs, 0 for non-mated.
        quality: pair quality (N,), or sample qualities (N, 2), or sample a's qualities with ``quality_b``.
        quality_b: sample b's qualities when ``quality`` holds sample a's.
        pair_quality: how sample qualities combine: ``"min"``, ``"max"``, ``"mean"``, ``"product"`` or a callable;
            default ``min``, or ``max`` when ``higher_is_better=False``.
        higher_is_better: False for uncertainties: sorts by the negated value, so the most uncertain go first.
        fmr: FMR targets, ``τ = numpy.quantile(nonmated, 1 - fmr)`` on the full set; default (1e-3, 1e-4) when
            no other operating point is given.
        starting_error: τ from the starting FNMR (``quantile(mated, e0)``) or FMR (``quantile(nonmated, 1 - e0)``).
        threshold: τ given, in the units of ``scores``.
        discard_limits: limits L of the reported stepwise pAUC.
        error: ``"fnmr"`` (FNM-EDC on mated pairs) or ``"fmr"`` (FM-EDC on non-mated).
        score_kind: ``"cosine"`` or ``"similarity"`` (higher is more similar), or ``"distance"`` (lower is more
            similar; the curve works on -d, FNM is then d > τ).
        method: name of the quality method, carried into the result.

    Raises:
        ValueError: for non-finite inputs, lengths that differ, labels other than 0/1, a missing class, targets or
            limits out of range, an unknown option, or no operating point.
    """
    fmrs, e0s, thresholds, limits = fixed_threshold_options(
        fmr=fmr,
        starting_error=starting_error,
        threshold=threshold,
        discard_limits=discard_limits,
        error=error,
        score_kind=score_kind,
    )
    s, mated, key, pair_name = _comparisons(scores, labels, quality, quality_b, pair_quality, higher_is_better)
    if fmr is None and not e0s and not thresholds:
        fmrs = DEFAULT_FMRS
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
        label: _fixed_curve(sorted_key, starts, sorted_sim, tau, error, label, limits, sign) for label, tau in points
    }
    targets = {f"fmr={f:g}": f for f in fmrs}
    warnings = _mark_small_samples(curves, sim[~mated], targets, sign)
    return EDCResult(
        method=method,
        convention="fixed_threshold",
        protocol=_protocol(error),
        pair_quality=pair_name,
        higher_is_better=higher_is_better,
        n_pairs=int(s.size),
        n_mated=int(mated.sum()),
        n_nonmated=int((~mated).sum()),
        curves=curves,
        warnings=warnings,
    )


def _mark_small_samples(
    curves: dict[str, Curve], nonmated: np.ndarray, targets: dict[str, float], sign: float
) -> list[str]:
    """Set the FMR target, the FMR achieved on all ``nonmated`` similarity scores (a false match is ``s >= τ``)
    and the measurability of every fixed threshold; the warnings of the targets below ``1/n``."""
    n = int(nonmated.size)
    warnings: list[str] = []
    for label, curve in curves.items():
        assert isinstance(curve, FixedThresholdEDC)
        if n:
            tau = sign * curve.threshold  # back to similarity units
            curve.achieved_fmr = float(np.count_nonzero(nonmated >= tau)) / n
            curve.nonmated_count = n
        target = targets.get(label)
        if target is None:
            continue
        curve.fmr_target = target
        if not rate_measurable(target, n):
            curve.measurable = False
            accepted = round((curve.achieved_fmr or 0.0) * n)
            curve.note = (
                f"FMR {target:g} cannot be measured on {n:,} non-mated pairs (needs ≥ {comparisons_needed(target):,}): "
                f"the threshold {curve.threshold:.6g} gives FMR {curve.achieved_fmr:.3g} ({accepted} of {n:,})"
            )
            warnings.append(f"{label}: {curve.note}")
    return warnings


def _protocol(error: str) -> str:
    kind = "mated comparisons (FNM-EDC)" if error == "fnmr" else "non-mated comparisons (FM-EDC)"
    return (
        f"threshold fixed for the whole curve; discard fraction of the {kind}; pairs of equal quality discarded "
        "together; stepwise pAUC, raw and minus the area under the theoretical best (dasec edc.py, ISO/IEC "
        "29794-1 style)"
    )


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
        taus = threshold_at_fmr(sim[~mated], fmr, rule="quantile")  # numpy.quantile(nonmated, 1 - fmr), one partition
        points += [(f"fmr={f:g}", float(tau)) for f, tau in zip(fmr, taus, strict=True)]
    for e0 in starting_error:
        if error == "fnmr":
            if not mated.any():
                raise ValueError("labels: no mated pairs (label 1); a starting FNMR needs them")
            points.append((f"starting_error={e0:g}", float(np.quantile(sim[mated], e0))))
        else:
            if not (~mated).any():
                raise ValueError("labels: no non-mated pairs (label 0); a starting FMR needs them")
            points.append((f"starting_error={e0:g}", threshold_at_fmr(sim[~mated], e0, rule="quantile")))
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
