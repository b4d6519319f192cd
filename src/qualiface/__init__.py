"""qualiface: quality- and uncertainty-aware face recognition."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from qualiface import backbones, heads, quality
from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.heads.base import Head, HeadOutput
from qualiface.models import FaceModel, load_model
from qualiface.quality.base import QualityEstimator
from qualiface.registry import BACKBONES, HEADS, QUALITY

try:
    __version__ = version("qualiface")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a registered backbone, e.g. ``create_backbone("iresnet50", quality_branch="cr_fiqa")``; the
    arguments are kept on it as ``arch_kwargs`` (what its model card and exports record)."""
    backbone: Backbone = BACKBONES.create(name, **kwargs)
    backbone.arch_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return backbone


def create_head(name: str, embedding_dim: int, num_classes: int, **kwargs: Any) -> Head:
    """Build a registered margin head with its paper's defaults; any argument can be overridden by keyword."""
    return HEADS.create(name, embedding_dim=embedding_dim, num_classes=num_classes, **kwargs)


def create_quality_estimator(name: str, backbone: Backbone, **kwargs: Any) -> QualityEstimator:
    """Wrap ``backbone`` in a registered quality estimator (one score per image, higher = better)."""
    return QUALITY.create(name, backbone=backbone, **kwargs)


def list_backbones(pattern: str = "*") -> list[str]:
    """Names of the registered backbones."""
    return BACKBONES.names(pattern)


def list_heads(pattern: str = "*") -> list[str]:
    """Names of the registered heads."""
    return HEADS.names(pattern)


def list_quality(pattern: str = "*") -> list[str]:
    """Names of the registered quality estimators."""
    return QUALITY.names(pattern)


__all__ = [
    "BACKBONES",
    "HEADS",
    "QUALITY",
    "Backbone",
    "FaceModel",
    "Head",
    "HeadOutput",
    "Preprocessing",
    "QualityEstimator",
    "__version__",
    "backbones",
    "create_backbone",
    "create_head",
    "create_quality_estimator",
    "heads",
    "list_backbones",
    "list_heads",
    "list_quality",
    "load_model",
    "quality",
]
