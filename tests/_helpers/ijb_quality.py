"""A small IJB-like set with per-image quality scores, and CR-FIQA's quality-weighted IJB-C evaluation
(``IJB-C Evaluation/eval_ijbc_qs.py``) written out from its formulas in float64 loops, as an independent reference
for ``pool_templates`` / ``ijb_verification`` with quality weights."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics


def ijb_quality_set(seed: int = 0, n_templates: int = 30, n_subjects: int = 8, dim: int = 12) -> dict[str, Any]:
    """Templates of 1-3 media (stills or 2-4 video frames), images shuffled, quality scores on CR-FIQA's open
    scale (negative ones included) that track each image's noise, so quality weighting changes the scores. The
    last template is a single image holding the lowest quality score (weight 0 under min-max)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_subjects, dim))
    subject_of: dict[int, int] = {}
    rows: list[tuple[int, int]] = []
    media = 700
    for t in range(1, n_templates):
        subject_of[10 * t + 3] = int(rng.integers(0, n_subjects))
        for _ in range(rng.integers(1, 4)):
            media += int(rng.integers(1, 4))
            rows += [(10 * t + 3, media)] * (1 if rng.random() < 0.5 else int(rng.integers(2, 5)))
    lonely = 10 * n_templates + 3
    subject_of[lonely] = int(rng.integers(0, n_subjects))
    rows.append((lonely, media + 1))
    n = len(rows)
    quality = rng.uniform(-0.5, 2.5, size=n)
    quality[-1] = -0.9  # the lowest score: weight 0, and its template has no other image
    noise = 0.3 + 1.5 * (2.5 - quality) / 3.4  # lower quality, noisier image
    tids = np.array([r[0] for r in rows], dtype=np.int64)
    mids = np.array([r[1] for r in rows], dtype=np.int64)
    subj = np.array([subject_of[int(t)] for t in tids])
    scale = rng.uniform(0.5, 3.0, size=(n, 1))
    feats = (centers[subj] + noise[:, None] * rng.normal(size=(n, dim))) * scale
    flipped = (centers[subj] + noise[:, None] * rng.normal(size=(n, dim))) * scale
    order = rng.permutation(n)
    ids = sorted(subject_of)
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]  # every template pair once
    t1 = np.array([a for a, _ in pairs], dtype=np.int64)
    t2 = np.array([b for _, b in pairs], dtype=np.int64)
    labels = np.array([subject_of[int(a)] == subject_of[int(b)] for a, b in zip(t1, t2, strict=True)], dtype=np.int64)
    return {
        "feats": feats[order].astype(np.float32),
        "flipped": flipped[order].astype(np.float32),
        "tids": tids[order],
        "mids": mids[order],
        "quality": quality[order],
        "names": np.array([f"{i + 1}.jpg" for i in range(n)]),
        "t1": t1,
        "t2": t2,
        "labels": labels,
        "lonely": lonely,
    }


def eval_ijbc_qs_reference(
    feats: np.ndarray,
    flipped: np.ndarray,
    tids: np.ndarray,
    mids: np.ndarray,
    quality: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    labels: np.ndarray,
    fars: tuple[float, ...],
) -> tuple[dict[int, np.ndarray], np.ndarray, dict[float, float], float]:
    """eval_ijbc_qs.py's steps, float64: F1 flip sum ``f + f_flip``; N1 raw norm kept; the "detector score" step
    replaced by ``qs = (q - min q) / (max q - min q)`` over all images, ``v * qs / sum(qs)``; per template (sorted
    ids) per media (sorted ids) the mean of its images, template = sum of media, ``sklearn normalize`` (a zero
    vector stays zero); pair score = dot product; ROC with sklearn, arrays reversed, TPR at the FPR nearest each
    target (ties to the first in reversed order). Returns (templates by id, scores, TAR by FAR, AUC)."""
    f = np.asarray(feats, dtype=np.float64)
    g = np.asarray(flipped, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    qs = (q - min(q)) / (max(q) - min(q))
    total = sum(qs)
    templates: dict[int, np.ndarray] = {}
    for t in sorted(set(tids.tolist())):
        media_feats = []
        for m in sorted(set(mids[tids == t].tolist())):
            members = [i for i in range(len(tids)) if tids[i] == t and mids[i] == m]
            vectors = [(f[i] + g[i]) * qs[i] / total for i in members]
            media_feats.append(sum(vectors) / len(vectors))
        template = sum(media_feats)
        norm = float(np.sqrt(np.sum(template**2)))
        templates[t] = template / norm if norm > 0 else template
    scores = np.array([float(np.dot(templates[int(a)], templates[int(b)])) for a, b in zip(t1, t2, strict=True)])
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    rf, rt = np.flipud(fpr), np.flipud(tpr)
    tar = {}
    for far in fars:
        _, i = min(zip(abs(rf - far), range(len(rf)), strict=True))
        tar[far] = float(rt[i])
    return templates, scores, tar, float(metrics.auc(fpr, tpr))
