"""Evaluation: verification, IJB templates, identification, quality (EDC/ERC) and uncertainty curves.

Every function takes scores, labels and embeddings as arrays and returns a dataclass with ``to_dict()``,
``to_json()`` and ``to_csv()``; the protocols and their sources are in each docstring.
"""

from qualiface.eval.correlation import RankCorrelation, mated_score_correlation, rank_correlation
from qualiface.eval.edc import EDCResult, edc, edc_fixed_threshold, edc_oracle, edc_random, erc_recomputed_threshold
from qualiface.eval.fusion import FLIP_FUSION_MODES, fuse_flip
from qualiface.eval.identification import IdentificationResult, identification, tinyface_identification
from qualiface.eval.ijb import IJBVerificationResult, ijb_identification, ijb_verification, legacy_insightface_1n
from qualiface.eval.results import Result
from qualiface.eval.roc import auc, eer, roc_curve, tar_at_far
from qualiface.eval.uncertainty import RejectionCurve, accuracy_rejection_curve, rejection_curve
from qualiface.eval.verification import (
    VerificationResult,
    evaluate_distances,
    evaluate_verification,
    kfold_accuracy,
    val_at_far,
)

__all__ = [
    "FLIP_FUSION_MODES",
    "EDCResult",
    "IJBVerificationResult",
    "IdentificationResult",
    "RankCorrelation",
    "RejectionCurve",
    "Result",
    "VerificationResult",
    "accuracy_rejection_curve",
    "auc",
    "edc",
    "edc_fixed_threshold",
    "edc_oracle",
    "edc_random",
    "eer",
    "erc_recomputed_threshold",
    "evaluate_distances",
    "evaluate_verification",
    "fuse_flip",
    "identification",
    "ijb_identification",
    "ijb_verification",
    "kfold_accuracy",
    "legacy_insightface_1n",
    "mated_score_correlation",
    "rank_correlation",
    "rejection_curve",
    "roc_curve",
    "tar_at_far",
    "tinyface_identification",
    "val_at_far",
]
