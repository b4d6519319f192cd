"""Error versus discard characteristic (EDC / ERC) of face image quality, its pAUC, and reference curves.

Comparisons are sorted by pair quality, the worst fraction is discarded, and an error rate of the rest is plotted
against the discarded fraction (docs/protocols.md, 'EDC and ERC'). Three conventions give different numbers; every
result names its convention, and numbers of different conventions must not be mixed:

``"fixed_threshold"`` (the default; :func:`edc_fixed_threshold`, module :mod:`.fixed_threshold`)
    ISO/IEC 29794-1 style, exactly as ``dasec/quality-assessment-evaluation: edc.py`` (docs/protocols.md,
    'Fixed-threshold EDC'). The comparisons of one type only (mated for the FNM-EDC, non-mated for the FM-EDC);
    the x axis is the fraction of those discarded. The similarity threshold τ is fixed for the whole curve:
    ``numpy.quantile(nonmated, 1 - fmr)`` on the full non-mated set, ``numpy.quantile(mated, e0)`` from a starting
    error e0 (``quantile(nonmated, 1 - e0)`` for the FM-EDC), or given. FNM is ``s < τ``, FM is ``s >= τ``. Pairs
    are sorted by quality with a stable sort, pairs of equal quality are discarded together (curve points only
    where the quality changes), and the point (1, 0) is appended. pAUC(L) is the stepwise area up to the discard
    limit L, reported raw and minus the area under the theoretical best ``A*(L) = e0²/2 - max(0, e0 - L)²/2``
    (docs/protocols.md, 'pAUC').
``"crfiqa"`` (:func:`erc_recomputed_threshold`, module :mod:`.recomputed`)
    ``fdbtrs/CR-FIQA: ERC/erc.py`` (``getFNMRFixedTH``) and ``ERC/roc.py`` (docs/protocols.md, 'CR-FIQA ERC').
    All pairs, mated and non-mated; the lowest ``int(u·N)`` are discarded for u in ``numpy.arange(0, 0.98, 0.05)``,
    no tie grouping. Distance ``d = arccos(clip(s, -1, 1))/π``. At every u the threshold is re-estimated: among
    the unique kept distances, the one whose FMR ``#{impostor d <= t}/n_imp`` is nearest to the target, ties to
    the largest t; then ``FNMR = 1 - #{genuine d < t}/n_gen``. Its "AUC" is ``sklearn.metrics.auc`` (trapezoidal)
    over u = 0 … 0.95.
``"magface"`` (:func:`erc_recomputed_threshold` with ``rule="magface"``)
    ``IrvingMeng/MagFace: eval/eval_quality/eval_quality.py`` (docs/protocols.md, 'MagFace ERC'). Same grid and
    discard; the threshold is the kept impostor distance at ascending index
    ``idx = int(int(int((n_imp - 1)/10)/10)/10)`` for FMR 1e-3 (k divisions for 10^-k), and
    ``FNMR = #{genuine d >= τ}/n_gen``. MagFace prints no AUC; we add the trapezoidal one.

Pair quality is ``min(q_a, q_b)`` in every reference (docs/protocols.md, 'Pair quality'; module :mod:`.pairing`).
For uncertainties pass ``higher_is_better=False``: the pairs are then sorted by the negated value (most uncertain
discarded first) and the default pair function is ``max`` (the worse sample), so that the result equals that of the
negated uncertainties. ``fdbtrs/CR-FIQA`` keeps ``min`` even for PFE's σ and reverses the order; pass
``pair_quality="min"`` to reproduce that.

The references sort with NumPy's default (unstable) quicksort; here every sort is stable, so pairs of equal quality
keep their input order. That changes nothing in the fixed-threshold convention (ties are discarded together) and
makes the recomputed conventions deterministic where the references depend on the platform.

Reference curves for plots (module :mod:`.references`): :func:`edc_random` (expected curve of an uninformative
quality) and :func:`edc_oracle` (a quality that discards the errors first).

Everything is vectorised. The fixed threshold needs one stable sort by quality. The recomputed conventions need a
value-only sort of the qualities (to find the last level at which each pair is kept), one sort of the distances per
class, and per level O(log n) searches and O(n / 2048) work (:class:`~qualiface.eval.edc.kept._KeptCounter`); 1M
pairs take well under 0.15 s in every convention (``bench/eval_edc.py``).

:func:`edc` dispatches to the function of the chosen convention; each of those takes only its own options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from numpy.typing import ArrayLike

from qualiface.eval.edc.fixed_threshold import edc_fixed_threshold
from qualiface.eval.edc.inputs import (
    CONVENTIONS,
    DEFAULT_DISCARD_LIMITS,
    DEFAULT_FMRS,
    Convention,
    ErrorType,
    ScoreKind,
    _check_convention,
    fixed_threshold_options,
)
from qualiface.eval.edc.pairing import PAIR_QUALITY_FUNCTIONS, PairQualityFunction, normalize_quality, pair_quality
from qualiface.eval.edc.pauc import area_under_theoretical_best, edc_pauc
from qualiface.eval.edc.recomputed import erc_discard_grid, erc_recomputed_threshold
from qualiface.eval.edc.references import edc_oracle, edc_random
from qualiface.eval.edc.results import EDCResult, FixedThresholdEDC, RecomputedThresholdERC

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
    """EDC / ERC of one quality method in the chosen convention (see the module docstring and docs/protocols.md,
    'EDC and ERC'): :func:`edc_fixed_threshold` or :func:`erc_recomputed_threshold` with these arguments.

    Args:
        scores: comparison score per pair; cosine similarity by default (see ``score_kind``).
        labels: 1 (or True) for mated pairs, 0 for non-mated.
        quality: pair quality (N,), or sample qualities (N, 2), or sample a's qualities with ``quality_b``.
        quality_b: sample b's qualities when ``quality`` holds sample a's.
        convention: ``"fixed_threshold"`` (docs/protocols.md, 'Fixed-threshold EDC'), ``"crfiqa"`` ('CR-FIQA ERC')
            or ``"magface"`` ('MagFace ERC').
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
    _check_convention(convention)
    if convention == "fixed_threshold":
        return edc_fixed_threshold(
            scores, labels, quality, quality_b, pair_quality=pair_quality, higher_is_better=higher_is_better,
            fmr=fmr, starting_error=starting_error, threshold=threshold, discard_limits=discard_limits, error=error,
            score_kind=score_kind, method=method,
        )  # fmt: skip
    # the options of the fixed threshold only: checked as edc_fixed_threshold checks them, then refused
    _, e0s, thresholds, _ = fixed_threshold_options(
        fmr=fmr,
        starting_error=starting_error,
        threshold=threshold,
        discard_limits=discard_limits,
        error=error,
        score_kind=score_kind,
    )
    if e0s or thresholds:
        raise ValueError(f"convention {convention!r} re-estimates the threshold; starting_error/threshold do not apply")
    if error != "fnmr":
        raise ValueError(f"convention {convention!r} computes FNMR only; error={error!r} does not apply")
    rule: Literal["crfiqa", "magface"] = "crfiqa" if convention == "crfiqa" else "magface"
    return erc_recomputed_threshold(
        scores, labels, quality, quality_b, rule=rule, pair_quality=pair_quality, higher_is_better=higher_is_better,
        fmr=fmr, discard_limits=discard_limits, score_kind=score_kind, method=method,
    )  # fmt: skip
