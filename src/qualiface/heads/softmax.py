"""NormFace-style cosine softmax (Wang et al., "NormFace", ACM MM 2017)."""

from __future__ import annotations

from typing import Any

from qualiface.heads.base import Head, HeadInputs, MarginTerms
from qualiface.registry import HEADS


@HEADS.register("softmax")
class CosineSoftmax(Head):
    """Normalised softmax: ``L = CE(s · cos θ_j)``, ``cos θ_j = x̂ · ŵ_j``; no margin.

    Default ``scale = 64`` (arcface_torch's margin list (1, 0, 0)); NormFace shows ``s`` must exceed a
    lower bound that grows with ``C`` for the loss to be able to approach zero.
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, scale: float = 64.0, **kwargs: Any) -> None:
        super().__init__(embedding_dim, num_classes, **kwargs)
        self.scale = scale

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        return MarginTerms(self.scale * inputs.cos_target, self.scale)
