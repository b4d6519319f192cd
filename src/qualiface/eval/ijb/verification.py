"""IJB-B/C 1:1 verification: TAR at FAR, AUC and EER of the template pairs (docs/protocols.md, 'IJB-B / IJB-C'
and 'TAR at FAR'; ``deepinsight/insightface: recognition/arcface_torch/eval_ijbc.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from qualiface.eval.ijb.pooling import TemplatePooling, pool_templates, resolve_pooling
from qualiface.eval.ijb.results import IJBVerificationResult
from qualiface.eval.ijb.scoring import ijb_pair_scores
from qualiface.eval.roc import (
    IJB_FARS,
    auc,
    decimate_roc,
    eer_from_counts,
    roc_counts,
    tar_at_far_from_counts,
)


def verification_from_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    fars: Sequence[float] = IJB_FARS,
    n_templates: int = 0,
    score_type: str = "cosine",
    pooling: TemplatePooling | None = None,
    roc_points: int = 2000,
) -> IJBVerificationResult:
    """:class:`IJBVerificationResult` from pair scores and labels (one sort serves every number)."""
    counts = roc_counts(scores, labels)
    fpr, tpr, thresholds = counts.curve(drop_intermediate=True)
    eer_value, eer_threshold = eer_from_counts(counts)
    fpr_d, tpr_d, thr_d = decimate_roc(fpr, tpr, thresholds, max_points=roc_points)
    return IJBVerificationResult(
        tar_at_far=tar_at_far_from_counts(counts, fars, mode="nearest"),
        tar_at_far_conservative=tar_at_far_from_counts(counts, fars, mode="conservative"),
        auc=auc(fpr, tpr),
        eer=eer_value,
        eer_threshold=eer_threshold,
        n_pairs=counts.n_pos + counts.n_neg,
        n_genuine=counts.n_pos,
        n_impostor=counts.n_neg,
        n_templates=n_templates,
        score_type=score_type,
        pooling=asdict(pooling) if pooling is not None else {},
        roc_fpr=fpr_d,
        roc_tpr=tpr_d,
        roc_thresholds=thr_d,
    )


def ijb_verification(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    pair_t1: np.ndarray,
    pair_t2: np.ndarray,
    labels: np.ndarray,
    *,
    flipped: np.ndarray | None = None,
    faceness: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    pooling: TemplatePooling | str = "insightface",
    fars: Sequence[float] = IJB_FARS,
    dtype: type = np.float32,
    roc_points: int = 2000,
    progress: bool = True,
) -> IJBVerificationResult:
    """IJB-B/C 1:1 verification from per-image features (docs/protocols.md, 'IJB-B / IJB-C';
    see :mod:`qualiface.eval.ijb`).

    ``pair_t1``, ``pair_t2``, ``labels`` are the columns of ``<x>_template_pair_label.txt``. ``dtype`` is the
    precision of the pair scores (float32 by default; insightface scores in float64, which can only change TAR
    where two scores are within about 1e-7).
    """
    pooling = resolve_pooling(pooling)
    labels = np.asarray(labels)
    if labels.shape != np.shape(pair_t1) or labels.shape != np.shape(pair_t2):
        raise ValueError(
            f"pair columns differ in length: {np.shape(pair_t1)}, {np.shape(pair_t2)}, labels {labels.shape}"
        )
    templates = pool_templates(
        features, template_ids, media_ids, flipped=flipped, faceness=faceness, quality=quality, pooling=pooling,
        progress=progress,
    )  # fmt: skip
    scores = ijb_pair_scores(templates, pair_t1, pair_t2, score=pooling.score, dtype=dtype, progress=progress)
    return verification_from_scores(
        scores, labels, fars=fars, n_templates=templates.template_ids.shape[0], score_type=pooling.score,
        pooling=pooling, roc_points=roc_points,
    )  # fmt: skip
