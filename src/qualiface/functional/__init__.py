"""Pure tensor maths shared by heads, quality estimators and evaluation: each formula written once."""

from qualiface.functional.cosine import cosine_matrix, sample_classes
from qualiface.functional.margin_ce import margin_cross_entropy, sharded_margin_cross_entropy
from qualiface.functional.margins import additive_angular_target, additive_cosine_target, clamped_acos, l2_normalize
from qualiface.functional.uss import partial_uss_loss, uss_loss

__all__ = [
    "additive_angular_target",
    "additive_cosine_target",
    "clamped_acos",
    "cosine_matrix",
    "l2_normalize",
    "margin_cross_entropy",
    "partial_uss_loss",
    "sample_classes",
    "sharded_margin_cross_entropy",
    "uss_loss",
]
