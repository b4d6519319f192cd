"""ERCs with the threshold re-estimated at every discard level, as CR-FIQA and MagFace compute them
(docs/protocols.md, 'CR-FIQA ERC' and 'MagFace ERC').

``rule="crfiqa"``
    ``fdbtrs/CR-FIQA: ERC/erc.py`` (``getFNMRFixedTH``) and ``ERC/roc.py``. All pairs, mated and non-mated; the
    lowest ``int(u·N)`` are discarded for u in ``numpy.arange(0, 0.98, 0.05)``, no tie grouping. Distance
    ``d = arccos(clip(s, -1, 1))/π``. At every u the threshold is re-estimated: among the unique kept distances,
    the one whose FMR ``#{impostor d <= t}/n_imp`` is nearest to the target, ties to the largest t; then
    ``FNMR = 1 - #{genuine d < t}/n_gen``. Its "AUC" is ``sklearn.metrics.auc`` (trapezoidal) over u = 0 … 0.95.
``rule="magface"``
    ``IrvingMeng/MagFace: eval/eval_quality/eval_quality.py``. Same grid and discard; the threshold is the kept
    impostor distance at ascending index ``idx = int(int(int((n_imp - 1)/10)/10)/10)`` for FMR 1e-3 (k divisions
    for 10^-k), and ``FNMR = #{genuine d >= τ}/n_gen``. MagFace prints no AUC; we add the trapezoidal one.

Vectorised over levels and targets: a value-only sort of the qualities (to find the last level at which each pair
is kept), one sort of the distances per class, and per level O(log n) searches and O(n / 2048) work
(:class:`~qualiface.eval.edc.kept._KeptCounter`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.edc.inputs import (
    DEFAULT_DISCARD_LIMITS,
    DEFAULT_FMRS,
    ScoreKind,
    _check_score_kind,
)
from qualiface.eval.edc.kept import _KeptCounter, _last_levels
from qualiface.eval.edc.pairing import PairQualityFunction, _comparisons
from qualiface.eval.edc.pauc import _trapezoid_pauc
from qualiface.eval.edc.results import Curve, EDCResult, RecomputedThresholdERC
from qualiface.eval.inputs import open_interval_values, unit_interval_values
from qualiface.eval.roc import comparisons_needed, rate_measurable


def erc_recomputed_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    quality: ArrayLike,
    quality_b: ArrayLike | None = None,
    *,
    rule: Literal["crfiqa", "magface"] = "crfiqa",
    pair_quality: str | PairQualityFunction | None = None,
    higher_is_better: bool = True,
    fmr: float | Sequence[float] | None = None,
    discard_limits: float | Sequence[float] = DEFAULT_DISCARD_LIMITS,
    score_kind: ScoreKind = "cosine",
    method: str = "quality",
) -> EDCResult:
    """ERC with the threshold re-estimated at every discard level (FNMR only). :func:`qualiface.eval.edc.edc`
    with ``convention=rule`` gives the same result.

    ``rule="crfiqa"``: ``fdbtrs/CR-FIQA: ERC/erc.py`` (docs/protocols.md, 'CR-FIQA ERC'); ``rule="magface"``:
    ``IrvingMeng/MagFace: eval/eval_quality/eval_quality.py`` (docs/protocols.md, 'MagFace ERC').

    Args:
        scores, labels, quality, quality_b, pair_quality, higher_is_better, method: as in
            :func:`~qualiface.eval.edc.edc_fixed_threshold`.
        rule: ``"crfiqa"`` or ``"magface"``.
        fmr: FMR targets, the target of the threshold at every level; default (1e-3, 1e-4). MagFace knows 10^-k
            only.
        discard_limits: limits L of the reported trapezoidal pAUC.
        score_kind: ``"cosine"`` (similarity in [-1, 1]; distance arccos(s)/π as the references),
            ``"similarity"`` (any similarity; distance -s) or ``"distance"`` (lower is more similar).

    Raises:
        ValueError: for non-finite inputs, lengths that differ, labels other than 0/1, a missing class, targets or
            limits out of range, an unknown rule or option.
    """
    if rule not in ("crfiqa", "magface"):
        raise ValueError(f"rule: unknown {rule!r}; use 'crfiqa' or 'magface'")
    _check_score_kind(score_kind)
    s, mated, key, pair_name = _comparisons(scores, labels, quality, quality_b, pair_quality, higher_is_better)
    fmrs = open_interval_values("fmr", fmr, 0.0, 1.0) if fmr is not None else DEFAULT_FMRS
    limits = unit_interval_values("discard_limits", discard_limits)
    if not fmrs:
        raise ValueError("fmr: give at least one FMR target")
    if not mated.any() or mated.all():
        raise ValueError(f"labels: convention {rule!r} needs mated (1) and non-mated (0) pairs")
    if rule == "magface":
        for f in fmrs:
            _magface_divisions(f)
    curves: dict[str, Curve] = dict(_recomputed_curves(_distances(s, score_kind), mated, key, fmrs, rule, limits))
    warnings = [f"{label}: {curve.note}" for label, curve in curves.items() if curve.note]
    return EDCResult(
        method=method,
        convention=rule,
        protocol=_protocol(rule),
        pair_quality=pair_name,
        higher_is_better=higher_is_better,
        n_pairs=int(s.size),
        n_mated=int(mated.sum()),
        n_nonmated=int((~mated).sum()),
        curves=curves,
        warnings=warnings,
    )


def _level_note(target: float, rule: str, nonmated: np.ndarray, measurable: np.ndarray, valid: np.ndarray) -> str:
    """Why some levels cannot measure the FMR target (too few kept non-mated pairs) or are NaN."""
    grid = erc_discard_grid()
    parts = []
    if not measurable.all():
        first = int(np.flatnonzero(~measurable)[0])
        parts.append(
            f"FMR {target:g} needs ≥ {comparisons_needed(target):,} kept non-mated pairs; from discard fraction "
            f"{grid[first]:.2f} on ({int(nonmated[first]):,} kept) the threshold cannot reach it (not measurable)"
        )
    if not valid.all():
        bad = ", ".join(f"{u:.2f}" for u in grid[~valid])
        why = (
            "no mated or no non-mated pair kept"
            if rule == "crfiqa"
            else "too few kept non-mated pairs for the reference's index (it records nothing there)"
        )
        parts.append(f"error_fractions are NaN at discard fractions {bad}: {why}")
    return "; ".join(parts)


def erc_discard_grid() -> np.ndarray:
    """Discard fractions of the CR-FIQA and MagFace scripts: ``numpy.arange(0, 0.98, 0.05)`` (0.00 … 0.95)."""
    return np.arange(0, 0.98, 0.05)


def _distances(scores: np.ndarray, score_kind: str) -> np.ndarray:
    """Distances as in CR-FIQA / MagFace: ``arccos(clip(s, -1, 1))/π`` for cosine similarities, ``-s`` for other
    similarities (order-equivalent), the input itself for distances."""
    if score_kind == "cosine":
        angles: np.ndarray = np.arccos(np.clip(scores, -1.0, 1.0)) / math.pi
        return angles
    if score_kind == "similarity":
        return -scores
    return scores


def _protocol(rule: str) -> str:
    if rule == "crfiqa":
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
    """CR-FIQA or MagFace ERCs for every FMR target, vectorised over levels and targets."""
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
        values: np.ndarray = imp_vals[np.maximum(imp.select(k, lev), 0)]
        return values

    def gen_value(k: np.ndarray) -> np.ndarray:
        values: np.ndarray = gen_vals[np.maximum(gen.select(k, lev), 0)]
        return values

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
    valid_levels = valid.reshape(shape)
    for j, target in enumerate(fmrs):
        y = fnmr[:, j].copy()
        measurable = np.array([rate_measurable(target, int(k)) for k in n_imp_level])
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
            measurable=measurable,
            note=_level_note(target, rule, n_imp_level, measurable, valid_levels[:, j]),
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
