"""CosFace / large-margin cosine loss (Wang et al., CVPR 2018)."""

from __future__ import annotations

from typing import Any

import torch

from qualiface.functional.margins import additive_cosine_target
from qualiface.heads.base import Head, HeadInputs, MarginTerms
from qualiface.registry import HEADS


@HEADS.register("cosface")
class CosFace(Head):
    """``L = −log( e^{s(cos θ_y − m)} / (e^{s(cos θ_y − m)} + Σ_{j≠y} e^{s cos θ_j}) )``.

    Paper defaults ``s = 64``, ``m = 0.35``; arcface_torch, AdaFace and UniTSFace train with ``m = 0.4``.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, *, scale: float = 64.0, margin: float = 0.35, **kwargs: Any
    ) -> None:
        super().__init__(embedding_dim, num_classes, **kwargs)
        self.scale = scale
        self.margin = margin

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        target = self.scale * additive_cosine_target(inputs.cos_target, self.margin)
        return MarginTerms(target, self.scale, logs={"head/margin_mean": torch.tensor(self.margin)})
