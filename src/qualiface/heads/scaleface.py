"""ScaleFace: ArcFace with a predicted per-sample scale (Kail et al., DSAA 2023; code ``stat-ml/scale-face``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from qualiface.functional.margins import additive_angular_target
from qualiface.heads.base import Head, HeadInputs, MarginTerms
from qualiface.registry import HEADS


@HEADS.register("scaleface")
class ScaleFace(Head):
    """ArcFace whose constant scale is replaced by a per-sample predicted scale ``s_i = s(x_i) > 0``.

    Called as ``head(embeddings, labels, scale=s)`` with ``s`` of shape ``(B,)`` or ``(B, 1)``::

        z_ij = s_i·cos(θ_ij + m·1[j = y_i]),   L_i = CE_i(z)

    ``m = 0.5``. The gradient reaches ``s_i`` through every logit of its row (it is the only training
    signal of the scale predictor; in the official fine-tune mode the backbone and the class centres are
    frozen, and the centres must be the ones trained with that backbone, loaded, not re-initialised).

    Official code (``face_lib/models/losses.py: ArcFaceScale``): analytic ``arccos``, no clamp, no easy margin
    and no threshold fallback, so a cosine that rounds above 1 gives NaN. Here the target cosine is clamped
    to ``[−1 + eps, 1 − eps]`` before ``arccos`` (identical values and gradients for ``|cos θ_y| < 1 − eps``),
    and there is no fallback (``cos(θ_y + m)`` is kept for ``θ_y + m > π``, as in the official code).
    Class centres: N(0, 0.01²) (Partial FC v1, as the official training).

    Args:
        margin: ``m`` in radians.
        eps: ``arccos`` clamp of the target cosine.
    """

    trained_quality: ClassVar[str | None] = "scaleface"

    requires: ClassVar[frozenset[str]] = frozenset({"scale"})

    def __init__(
        self, embedding_dim: int, num_classes: int, *, margin: float = 0.5, eps: float = 1e-7, **kwargs: Any
    ) -> None:
        super().__init__(embedding_dim, num_classes, **kwargs)
        self.margin = margin
        self.eps = eps

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, eps={self.eps}"

    def validate_aux(self, aux: dict[str, Tensor]) -> None:
        scale = aux["scale"]
        if not bool((scale > 0).all()):
            raise ValueError(f"ScaleFace: scale must be positive, got min {float(scale.min()):.4g}")

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        # without the value checks (the trainer) a non-positive scale makes the loss NaN, which stops training
        scale = inputs.aux["scale"].masked_fill(inputs.aux["scale"] <= 0, math.nan)
        target = additive_angular_target(inputs.cos_target, self.margin, fallback="none", eps=self.eps)
        detached = scale.detach()
        logs = {
            "head/margin_mean": torch.tensor(self.margin),
            "head/scale_mean": detached.mean(),
            "head/scale_min": detached.min(),
            "head/scale_max": detached.max(),
        }
        return MarginTerms(scale * target, scale, logs=logs)
