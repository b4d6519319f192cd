"""IJB-B / IJB-C template evaluation: image features -> template features -> 1:1 TAR@FAR and 1:N identification.

Protocol (docs/protocols.md, 'IJB-B / IJB-C'; ``deepinsight/insightface: recognition/arcface_torch/eval_ijbc.py``
and ``recognition/_evaluation_/ijb/ijb_evals.py``), default test mode "N1D1F1":

1. **Flip (F)**: ``v = f(x) + f(flip x)``, the raw halves summed (``flip_fusion="sum_raw"``).
2. **Norm (N)**: the raw norm is *kept* (insightface ``use_norm_score=True``); ``normalize_images=True`` L2-normalises
   ``v`` instead.
3. **Detector score (D)**: ``v <- v * faceness`` (last column of ``name_5pts_score``).
4. **Pooling**: per template (``np.unique`` order) the images are grouped by media id; a media contributes the
   **mean** of its images, the template is the **sum** of its media, then L2-normalised.
5. **Score**: ``s = <t1, t2>`` for each pair, in file order. TAR@FAR uses ``sklearn.metrics.roc_curve`` with
   ``drop_intermediate=True`` and the nearest-FPR rule (:mod:`qualiface.eval.roc`).

Variants (:data:`POOLING_PRESETS`): AdaFace (no faceness), MagFace (no flip, no faceness, media features
L2-normalised unless ``magface_qlt``, template = mean of media, score ``1 - arccos(cos)/pi``), CR-FIQA
(``concat_normalised`` flips, no faceness) and CR-FIQA's quality-weighted templates ``cr_fiqa_qs``
(``IJB-C Evaluation/eval_ijbc_qs.py``: flip sum, raw norm kept, no faceness, quality weights). Per-image quality
scores (optional with any variant) become weights, min-max scaled over the images by default
(:func:`quality_weights`), that multiply ``v`` like the faceness score, so they weight frames within a media and
media within a template.

Scoring never materialises the templates x templates matrix: pairs are grouped by blocks of row templates and each
block is one matrix product with only the columns its pairs need (:func:`score_template_pairs`).

Modules: :mod:`.pooling` (steps 1-4, template quality), :mod:`.scoring` (step 5), :mod:`.verification` (1:1),
:mod:`.identification` (1:N), :mod:`.results` (the result types).
"""

from qualiface.eval.ijb.identification import (
    INSIGHTFACE_1N_FARS,
    INSIGHTFACE_1N_SHOWN,
    ijb_identification,
    legacy_insightface_1n,
    legacy_insightface_1n_scores,
    open_set_identification,
)
from qualiface.eval.ijb.pooling import (
    POOLING_PRESETS,
    QUALITY_WEIGHTS,
    QualityWeights,
    ScoreType,
    TemplateFeatures,
    TemplatePooling,
    pool_templates,
    quality_weights,
    resolve_pooling,
    split_flip_halves,
    template_quality,
)
from qualiface.eval.ijb.results import (
    GalleryIdentification,
    IJBIdentificationResult,
    IJBVerificationResult,
    LegacyIJB1NResult,
)
from qualiface.eval.ijb.scoring import (
    cosine_to_score,
    ijb_pair_scores,
    score_template_pairs,
    score_template_pairs_gather,
)
from qualiface.eval.ijb.verification import ijb_verification, verification_from_scores

__all__ = [
    "INSIGHTFACE_1N_FARS",
    "INSIGHTFACE_1N_SHOWN",
    "POOLING_PRESETS",
    "QUALITY_WEIGHTS",
    "GalleryIdentification",
    "IJBIdentificationResult",
    "IJBVerificationResult",
    "LegacyIJB1NResult",
    "QualityWeights",
    "ScoreType",
    "TemplateFeatures",
    "TemplatePooling",
    "cosine_to_score",
    "ijb_identification",
    "ijb_pair_scores",
    "ijb_verification",
    "legacy_insightface_1n",
    "legacy_insightface_1n_scores",
    "open_set_identification",
    "pool_templates",
    "quality_weights",
    "resolve_pooling",
    "score_template_pairs",
    "score_template_pairs_gather",
    "split_flip_halves",
    "template_quality",
    "verification_from_scores",
]
