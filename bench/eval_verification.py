"""10-fold verification (insightface protocol) on 6,000 synthetic pairs: the library against the reference loop.

Usage::

    python bench/eval_verification.py

Rows (``run()``): the library's vectorised threshold sweep (``kfold_accuracy``), the same with VAL@FAR
(``val_at_far``), and a plain re-implementation of insightface ``calculate_roc`` / ``calculate_accuracy``
(a Python loop over 400 thresholds x 10 folds, twice per fold) in the same run, so the ratio does not depend on
the machine. The fold accuracies and thresholds of both are checked to be identical before timing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from _measure import best_of
from qualiface.eval.verification import evaluate_distances, evaluate_verification, kfold_accuracy, val_at_far

N_PAIRS = 6000


def _accuracy(threshold: float, dist: np.ndarray, actual_issame: np.ndarray) -> tuple[float, float, float]:
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def reference_calculate_roc(dist: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """insightface ``calculate_roc`` on precomputed distances: ``(fold accuracies, best thresholds)``."""
    thresholds = np.arange(0, 4, 0.01)
    tprs = np.zeros((n_folds, len(thresholds)))
    fprs = np.zeros((n_folds, len(thresholds)))
    accuracy = np.zeros(n_folds)
    best = np.zeros(n_folds)
    for fold_idx, (train_set, test_set) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(dist)):
        acc_train = np.zeros(len(thresholds))
        for i, threshold in enumerate(thresholds):
            _, _, acc_train[i] = _accuracy(threshold, dist[train_set], issame[train_set])
        best_index = np.argmax(acc_train)
        for i, threshold in enumerate(thresholds):
            tprs[fold_idx, i], fprs[fold_idx, i], _ = _accuracy(threshold, dist[test_set], issame[test_set])
        _, _, accuracy[fold_idx] = _accuracy(thresholds[best_index], dist[test_set], issame[test_set])
        best[fold_idx] = thresholds[best_index]
    return accuracy, best


def _pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """LFW-like pairs: 300 genuine + 300 impostor per fold, squared-L2 distances of 512-D unit vectors."""
    rng = np.random.default_rng(seed)
    issame = np.tile(np.repeat([True, False], 300), N_PAIRS // 600)
    cos = np.where(issame, rng.normal(0.55, 0.12, N_PAIRS), rng.normal(0.05, 0.07, N_PAIRS)).clip(-1, 1)
    return 2.0 - 2.0 * cos, issame


def run() -> list[dict[str, Any]]:
    """Time the library and the reference loop; rows ``name, seconds, peak_mib, note``."""
    dist, issame = _pairs()
    ours = kfold_accuracy(dist, issame)
    ref_acc, ref_best = reference_calculate_roc(dist, issame)
    if not (np.array_equal(ours.fold_accuracies, ref_acc) and np.array_equal(ours.fold_thresholds, ref_best)):
        raise AssertionError("library and reference loop disagree")
    lib = best_of(lambda: kfold_accuracy(dist, issame), 20)
    lib_val = best_of(lambda: val_at_far(dist, issame), 20)
    lib_all = best_of(lambda: evaluate_distances(dist, issame), 20)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(2 * N_PAIRS, 512)).astype(np.float32)
    emb[1::2][issame] += 0.8 * emb[0::2][issame]
    lib_emb = best_of(lambda: evaluate_verification(emb, issame), 5)
    ref = best_of(lambda: reference_calculate_roc(dist, issame), 3)
    note = f"{N_PAIRS} pairs, 10 folds, 400 thresholds; best of 20"
    return [
        {"name": "kfold_accuracy (library)", "seconds": lib, "peak_mib": None, "note": f"{note}; {ref / lib:.0f}x"},
        {"name": "val_at_far (library)", "seconds": lib_val, "peak_mib": None, "note": "4,000 thresholds"},
        {
            "name": "evaluate_distances (library)",
            "seconds": lib_all,
            "peak_mib": None,
            "note": "10-fold + VAL@FAR + all-pairs ROC, TAR@FAR, EER, AUC",
        },
        {
            "name": "evaluate_verification (library)",
            "seconds": lib_emb,
            "peak_mib": None,
            "note": "the same from 12,000 x 512 float32 embeddings (normalise, distances); best of 5",
        },
        {"name": "calculate_roc (insightface loop)", "seconds": ref, "peak_mib": None, "note": "best of 3"},
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']:36s} {1000 * row['seconds']:9.2f} ms   {row['note']}")
