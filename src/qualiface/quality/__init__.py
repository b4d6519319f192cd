"""Quality and uncertainty estimators: one score per image, higher = better."""

from qualiface.quality.base import QualityEstimator
from qualiface.registry import import_submodules

import_submodules(__name__, __path__)  # every module registers its branches and estimators

__all__ = ["QualityEstimator"]
