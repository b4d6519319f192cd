"""Registered quality estimators: feature norm (MagFace, AdaFace), CR-FIQA regressor, ScaleFace scale."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from qualiface.backbones.base import Backbone
from qualiface.quality.base import QualityEstimator
from qualiface.quality.branches import get_branch
from qualiface.registry import QUALITY


def _describe(backbone: nn.Module) -> str:
    arch = getattr(backbone, "arch", "") or type(backbone).__name__
    return f"{arch!r} (quality_branch={getattr(backbone, 'quality_branch', None)!r})"


class _BranchQuality(QualityEstimator):
    """Reads one auxiliary output of a backbone built with a quality branch."""

    branch: ClassVar[str]
    backbone: Backbone

    def __init__(self, backbone: Backbone) -> None:
        if getattr(backbone, "quality_branch", None) != self.branch or not hasattr(backbone, "forward_aux"):
            arch = getattr(backbone, "arch", "") or "<name>"
            raise ValueError(
                f"{self.name!r} quality needs a backbone built with quality_branch={self.branch!r}, got backbone "
                f"{_describe(backbone)}; build it with create_backbone({arch!r}, quality_branch={self.branch!r})"
            )
        super().__init__(backbone)

    def forward(self, images: Tensor) -> Tensor:
        _, aux = self.backbone.forward_aux(images)
        return aux[get_branch(self.branch).aux_key].float()


@QUALITY.register("feature_norm")
class FeatureNormQuality(QualityEstimator):
    """``||backbone(images)||_2`` of the raw embedding (docs/methods.md, 'Quality estimators and branches'); works
    with any backbone that returns un-normalised embeddings. The norm is taken in float32.
    """

    name: ClassVar[str] = "feature_norm"

    def forward(self, images: Tensor) -> Tensor:
        return torch.linalg.vector_norm(self.backbone(images).float(), dim=1)


@QUALITY.register("cr_fiqa")
class CRFIQAQuality(_BranchQuality):
    """CR-FIQA's regressed certainty ratio: the raw ``qs`` output on the (non-flipped) image, unbounded.

    Needs a backbone built with ``quality_branch="cr_fiqa"``.
    """

    name: ClassVar[str] = "cr_fiqa"
    branch: ClassVar[str] = "cr_fiqa"


@QUALITY.register("scaleface")
class ScaleFaceQuality(_BranchQuality):
    """ScaleFace's predicted per-sample scale s(x) (its "confidence"; higher = more certain).

    Needs a backbone built with ``quality_branch="scaleface"``.
    """

    name: ClassVar[str] = "scaleface"
    branch: ClassVar[str] = "scaleface"
