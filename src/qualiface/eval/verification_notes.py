"""What a verification result says about its own sample: the FAR targets too small to measure on its impostor
pairs, the folds that hold one class, and the reason of every NaN (docs/protocols.md, 'Small samples')."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from qualiface.eval.roc import comparisons_needed, rate_measurable


class FoldValues(Protocol):
    """The per-fold values of VAL@FAR that the notes explain."""

    fold_val: np.ndarray
    fold_far: np.ndarray
    fold_thresholds: np.ndarray


def far_key(far: float) -> str:
    """The key of a FAR target in the result's dictionaries (``"0.001"``)."""
    return f"{far:g}"


def fold_text(folds: np.ndarray) -> str:
    """``"0-4, 7"`` for the fold indices ``[0, 1, 2, 3, 4, 7]``."""
    parts: list[str] = []
    values = [int(k) for k in folds]
    start = prev = values[0]
    for k in [*values[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(parts)


def small_sample_notes(
    *,
    n_pos: np.ndarray,
    n_neg: np.ndarray,
    train_impostors: int,
    val: FoldValues,
    far_target: float,
    fars: Sequence[float],
    n_impostor: int,
) -> dict[str, Any]:
    """The small-sample fields of a verification result: which FAR targets the pairs measure, why a value is NaN,
    and the warnings (folds of one class, targets below ``1/n``).

    Args:
        n_pos, n_neg: genuine and impostor pairs per test fold.
        train_impostors: impostor pairs in the smallest set of training folds (what VAL@FAR is chosen on).
        val: the per-fold VAL, FAR and thresholds (:class:`~qualiface.eval.verification.ValAtFar`).
        far_target: VAL's target FAR.
        fars: the TAR@FAR targets.
        n_impostor: impostor pairs in all (what TAR@FAR is measured on).
    """
    n_folds = int(np.asarray(n_pos).shape[0])
    measurable = {far_key(f): rate_measurable(f, n_impostor) for f in fars}
    needed = {far_key(f): comparisons_needed(f) for f in fars}
    val_measurable = rate_measurable(far_target, train_impostors)
    warnings: list[str] = []
    reasons = {"all_pairs_thresholds": "the first ROC point (FAR 0, TAR 0) has threshold +inf (nothing accepted): null"}
    only_genuine, only_impostor = np.flatnonzero(n_neg == 0), np.flatnonzero(n_pos == 0)
    if only_genuine.size or only_impostor.size:
        parts = []
        if only_genuine.size:
            parts.append(f"fold(s) {fold_text(only_genuine)} hold only genuine pairs")
        if only_impostor.size:
            parts.append(f"fold(s) {fold_text(only_impostor)} hold only impostor pairs")
        warnings.append(
            f"{' and '.join(parts)}: the contiguous {n_folds}-fold protocol expects every fold (a block of "
            "consecutive rows) to mix both classes, as the insightface lists do; VAL is NaN where a test fold has "
            "no genuine pair, FAR where it has no impostor pair (0/0); interleave the list or give fewer --folds"
        )
    if np.isnan(val.fold_val).any():
        bad = np.flatnonzero(np.isnan(val.fold_val))
        reasons["fold_val"] = f"fold(s) {fold_text(bad)}: no genuine pair in the test fold, or no impostor to train on"
        reasons["val"] = f"the mean over the folds includes NaN folds ({fold_text(bad)})"
        reasons["val_std"] = reasons["val"]
    if np.isnan(val.fold_far).any():
        bad = np.flatnonzero(np.isnan(val.fold_far))
        reasons["fold_far"] = f"fold(s) {fold_text(bad)}: no impostor pair in the test fold, or none to train on"
        reasons["far"] = f"the mean over the folds includes NaN folds ({fold_text(bad)})"
    if np.isnan(val.fold_thresholds).any():
        bad = np.flatnonzero(np.isnan(val.fold_thresholds))
        reasons["fold_val_thresholds"] = f"fold(s) {fold_text(bad)}: no impostor pair in the training folds"
    unmeasured = [key for key, ok in measurable.items() if not ok]
    if unmeasured:
        warnings.append(
            f"TAR at FAR {', '.join(unmeasured)} cannot be measured on {n_impostor:,} impostor pairs (the smallest "
            f"measurable FAR is 1/{n_impostor:,} = {1 / n_impostor:.2g}); kept in tar_at_far but marked "
            "not measurable"
        )
    if not val_measurable:
        warnings.append(
            f"VAL@FAR={far_target:g} cannot be measured: the smallest training folds hold {train_impostors:,} "
            f"impostor pairs, fewer than the {comparisons_needed(far_target):,} the target needs"
        )
    return {
        "tar_at_far_measurable": measurable,
        "impostors_needed": needed,
        "val_measurable": val_measurable,
        "nan_reasons": reasons,
        "warnings": warnings,
    }
