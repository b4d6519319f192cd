"""Pure tensor maths shared by heads, quality estimators and evaluation: each formula written once."""

from qualiface.functional.cosine import cosine_matrix, sample_classes
from qualiface.functional.margin_ce import margin_cross_entropy
from qualiface.functional.margins import additive_angular_target, additive_cosine_target, clamped_acos, l2_normalize
from qualiface.functional.uss import uss_loss

__all__ = [
    "additive_angular_target",
    "additive_cosine_target",
    "clamped_acos",
    "cosine_matrix",
    "l2_normalize",
    "margin_cross_entropy",
    "sample_classes",
    "uss_loss",
]
