"""Plain re-implementations of insightface ``recognition/arcface_torch/eval/verification.py`` (loops, float64).

Written from the reference code (docs/protocols.md, '1:1 verification (10-fold)'): ``calculate_roc`` /
``calculate_accuracy`` loop over every threshold and fold with sklearn's ``KFold(shuffle=False)``; ``calculate_val``
interpolates the training FAR with the closed form of SciPy <= 1.8.1's ``interp1d(kind="slinear")`` on the unmerged
arrays, written as a loop, not with ``numpy.interp``.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold


def _splits(n_pairs: int, n_folds: int):
    indices = np.arange(n_pairs)
    if n_folds > 1:
        return list(KFold(n_splits=n_folds, shuffle=False).split(indices))
    return [(indices, indices)]  # insightface LFold


def calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    acc = float(tp + tn) / dist.size
    return tpr, fpr, acc


def calculate_roc(thresholds, dist, actual_issame, nrof_folds=10):
    """Returns ``(tpr, fpr, accuracy, best_thresholds)``: the reference plus the per-fold best thresholds."""
    actual_issame = np.asarray(actual_issame, dtype=bool)
    nrof_thresholds = len(thresholds)
    tprs = np.zeros((nrof_folds, nrof_thresholds))
    fprs = np.zeros((nrof_folds, nrof_thresholds))
    accuracy = np.zeros(nrof_folds)
    best = np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(_splits(len(dist), nrof_folds)):
        acc_train = np.zeros(nrof_thresholds)
        for threshold_idx, threshold in enumerate(thresholds):
            _, _, acc_train[threshold_idx] = calculate_accuracy(threshold, dist[train_set], actual_issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        best[fold_idx] = thresholds[best_threshold_index]
        for threshold_idx, threshold in enumerate(thresholds):
            tprs[fold_idx, threshold_idx], fprs[fold_idx, threshold_idx], _ = calculate_accuracy(
                threshold, dist[test_set], actual_issame[test_set]
            )
        _, _, accuracy[fold_idx] = calculate_accuracy(
            thresholds[best_threshold_index], dist[test_set], actual_issame[test_set]
        )
    return np.mean(tprs, 0), np.mean(fprs, 0), accuracy, best


def calculate_val_far(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    n_same = np.sum(actual_issame)
    n_diff = np.sum(np.logical_not(actual_issame))
    return float(true_accept) / float(n_same), float(false_accept) / float(n_diff)


def slinear_unmerged(x, xs, ys):
    """SciPy <= 1.8.1 ``interp1d(xs, ys, kind="slinear")(x)`` for non-decreasing ``xs`` with repeats:
    ``j = max{i : xs_i <= x}``, then the straight line from ``(xs_j, ys_j)`` to ``(xs_{j+1}, ys_{j+1})``."""
    j = -1
    for i in range(len(xs)):
        if xs[i] <= x:
            j = i
    if j == len(xs) - 1:
        return float(ys[j])
    return float(ys[j] + (ys[j + 1] - ys[j]) * (x - xs[j]) / (xs[j + 1] - xs[j]))


def calculate_val(thresholds, dist, actual_issame, far_target, nrof_folds=10, merges=(None,)):
    """One ``(val_mean, val_std, far_mean, per_fold_val, per_fold_threshold)`` per entry of ``merges``.

    ``None`` is the reference (unmerged arrays); ``"max"`` / ``"min"`` keep the largest / smallest threshold of
    every repeated FAR value first (the two "fixes" users apply for new SciPy; they change the number). The
    training FAR loop runs once for all variants.
    """
    actual_issame = np.asarray(actual_issame, dtype=bool)
    nrof_thresholds = len(thresholds)
    out = {m: (np.zeros(nrof_folds), np.zeros(nrof_folds), np.zeros(nrof_folds)) for m in merges}
    for fold_idx, (train_set, test_set) in enumerate(_splits(len(dist), nrof_folds)):
        far_train = np.zeros(nrof_thresholds)
        for threshold_idx, threshold in enumerate(thresholds):
            _, far_train[threshold_idx] = calculate_val_far(threshold, dist[train_set], actual_issame[train_set])
        for merge in merges:
            val, far, taus = out[merge]
            if np.max(far_train) >= far_target:
                xs, ys = list(far_train), list(thresholds)
                if merge is not None:
                    merged: dict[float, float] = {}
                    for f, t in zip(xs, ys, strict=True):
                        if f not in merged:
                            merged[f] = t
                        else:
                            merged[f] = max(merged[f], t) if merge == "max" else min(merged[f], t)
                    xs, ys = list(merged), list(merged.values())
                threshold = slinear_unmerged(far_target, xs, ys)
            else:
                threshold = 0.0
            taus[fold_idx] = threshold
            val[fold_idx], far[fold_idx] = calculate_val_far(threshold, dist[test_set], actual_issame[test_set])
    return [(np.mean(v), np.std(v), np.mean(f), v, t) for v, f, t in (out[m] for m in merges)]


def t4_vectors():
    """T4: 600 pairs, interleaved 3-D unit embeddings and issame; pair i mated iff floor(i/30) mod 2 == 0, angle
    0.30 + 1.3·a·c (mated) or 0.90 + 0.8·a (non-mated), a and c fractional parts of 0.5 + i·(irrational step)."""
    i = np.arange(600, dtype=np.float64)
    a = 0.5 + i * 0.6180339887498949
    a -= np.floor(a)
    c = 0.5 + i * 0.5698402909980532
    c -= np.floor(c)
    same = (np.floor(i / 30) % 2) == 0
    theta = np.where(same, 0.30 + 1.3 * a * c, 0.90 + 0.8 * a)
    e = np.zeros((1200, 3))
    e[0::2, 0] = 1.0
    e[1::2, 0] = (1 + c) * np.cos(theta)
    e[1::2, 1] = (1 + c) * np.sin(theta)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e, same
