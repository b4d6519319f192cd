"""ArcFace / additive angular margin loss (Deng et al., CVPR 2019)."""

from __future__ import annotations

from typing import Any

import torch

from qualiface.functional.margins import ArcFallback, ArcGrad, additive_angular_target
from qualiface.heads.base import Head, HeadInputs, MarginTerms
from qualiface.registry import HEADS


@HEADS.register("arcface")
class ArcFace(Head):
    """``L = −log( e^{s cos(θ_y + m)} / (e^{s cos(θ_y + m)} + Σ_{j≠y} e^{s cos θ_j}) )``, ``s = 64``, ``m = 0.5``.

    Args:
        scale: ``s``.
        margin: ``m`` in radians.
        grad: ``"exact"`` (default, the paper's gradient of ``cos(θ + m)``) or ``"insightface"``:
            arcface_torch since commit 657ae30 applies the margin under ``no_grad``, so its backward pass is
            the plain-cosine gradient (straight-through); forward values are identical.
        easy_margin: apply the margin only where ``cos θ_y > 0``.
        fallback: ``"threshold"`` (the official ArcFace code): where ``θ_y + m > π`` use
            ``cos θ_y − m sin m`` so the target stays monotonic; ``"none"`` keeps ``cos(θ_y + m)``
            (arcface_torch today: ``grad="insightface", fallback="none"``).
        eps: ``arccos`` clamp, ``cos θ_y`` is clamped to ``[−1 + eps, 1 − eps]`` inside the margin.

    The loss is plain cross-entropy (arcface_torch's Partial FC clamps ``p_y >= 1e-30``, which changes
    the value, not the gradient, for hopeless samples).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.5,
        grad: ArcGrad = "exact",
        easy_margin: bool = False,
        fallback: ArcFallback = "threshold",
        eps: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(embedding_dim, num_classes, **kwargs)
        if grad not in ("exact", "insightface"):
            raise ValueError(f"grad must be 'exact' or 'insightface', got {grad!r}")
        if fallback not in ("threshold", "none"):
            raise ValueError(f"fallback must be 'threshold' or 'none', got {fallback!r}")
        self.scale = scale
        self.margin = margin
        self.grad: ArcGrad = grad
        self.easy_margin = easy_margin
        self.fallback: ArcFallback = fallback
        self.eps = eps

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        target = additive_angular_target(
            inputs.cos_target,
            self.margin,
            grad=self.grad,
            easy_margin=self.easy_margin,
            fallback=self.fallback,
            eps=self.eps,
        )
        return MarginTerms(self.scale * target, self.scale, logs={"head/margin_mean": torch.tensor(self.margin)})
