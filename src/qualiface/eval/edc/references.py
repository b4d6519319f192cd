"""Reference curves for plots: the expected curve of an uninformative quality (:func:`edc_random`) and of a quality
that discards the errors first (:func:`edc_oracle`), evaluated like :func:`qualiface.eval.edc.edc`
(docs/protocols.md, 'EDC and ERC').
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.edc.fixed_threshold import _fixed_result
from qualiface.eval.edc.inputs import (
    DEFAULT_DISCARD_LIMITS,
    Convention,
    ErrorType,
    ScoreKind,
    _check_convention,
    _check_score_kind,
)
from qualiface.eval.edc.kept import _stable_order
from qualiface.eval.edc.recomputed import _distances
from qualiface.eval.edc.results import Curve, EDCResult, FixedThresholdEDC, RecomputedThresholdERC
from qualiface.eval.inputs import binary_labels, finite_vector, unit_interval_values


def _reference_setup(
    scores: ArrayLike, labels: ArrayLike, convention: str, score_kind: str
) -> tuple[np.ndarray, np.ndarray]:
    _check_convention(convention)
    _check_score_kind(score_kind)
    s = finite_vector("scores", scores)
    return s, binary_labels(labels, s.size)


def _keep_small_sample_fields(source: Curve, target: Curve) -> None:
    """Carry the operating point's FMR target, achieved FMR and measurability from the curve of the full set
    (the reference's own run sets its threshold directly and would lose them)."""
    if isinstance(source, FixedThresholdEDC) and isinstance(target, FixedThresholdEDC):
        target.fmr_target, target.achieved_fmr = source.fmr_target, source.achieved_fmr
        target.nonmated_count, target.measurable, target.note = source.nonmated_count, source.measurable, source.note


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
    from qualiface.eval.edc import edc  # the dispatcher lives in the package, which imports this module

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
        _keep_small_sample_fields(curve, only)
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
    from qualiface.eval.edc import edc  # the dispatcher lives in the package, which imports this module

    s, mated = _reference_setup(scores, labels, convention, score_kind)
    if n_permutations < 1:
        raise ValueError(f"n_permutations: must be >= 1, got {n_permutations}")
    options: dict[str, Any] = {
        "convention": convention, "fmr": fmr, "starting_error": starting_error, "threshold": threshold,
        "discard_limits": discard_limits, "error": error, "score_kind": score_kind, "method": "random",
    }  # fmt: skip
    base = edc(s, mated, np.zeros(s.size), **options)
    base.pair_quality = "random"
    limits = unit_interval_values("discard_limits", discard_limits)
    if convention == "fixed_threshold":
        for label, curve in base.curves.items():
            assert isinstance(curve, FixedThresholdEDC)
            e0 = curve.starting_error
            n = curve.comparison_count
            base.curves[label] = _fixed_result(
                label, curve.error, curve.threshold, n, np.array([0.0, 1.0]), np.array([e0, 0.0]),
                np.array([0]), curve.error_counts[:1].copy(), limits,
            )  # fmt: skip
            _keep_small_sample_fields(curve, base.curves[label])
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
