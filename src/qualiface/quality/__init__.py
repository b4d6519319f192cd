"""Quality and uncertainty estimators: one score per image, higher = better."""

from qualiface.quality import estimators  # noqa: F401  (registers the estimators)
from qualiface.quality.base import QualityEstimator

__all__ = ["QualityEstimator"]
