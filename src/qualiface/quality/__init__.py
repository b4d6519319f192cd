"""Quality and uncertainty estimators: one score per image, higher = better."""

from qualiface.quality import branches, estimators  # noqa: F401  (registers the branches and estimators)
from qualiface.quality.base import QualityEstimator

__all__ = ["QualityEstimator"]
