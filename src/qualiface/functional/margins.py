"""Margin functions on the target cosine, written once and shared by the heads."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ArcGrad = Literal["exact", "insightface"]
ArcFallback = Literal["threshold", "none"]


def l2_normalize(x: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """``(x / max(||x||, eps), ||x||)`` along the last dimension; the returned norm is unclamped."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / norm.clamp_min(eps), norm.squeeze(-1)


def additive_cosine_target(cos_y: Tensor, margin: float | Tensor) -> Tensor:
    """CosFace's margined target cosine ``cos θ_y − m`` (unscaled), ``m`` a float or per-sample ``(B,)``."""
    return cos_y - margin


def clamped_acos(cos: Tensor, eps: float) -> Tensor:
    """``arccos(clamp(cos, -1 + eps, 1 - eps))``: finite value and gradient everywhere."""
    return torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))


def additive_angular_target(
    cos_y: Tensor,
    margin: float | Tensor,
    *,
    grad: ArcGrad = "exact",
    easy_margin: bool = False,
    fallback: ArcFallback = "threshold",
    eps: float = 1e-7,
) -> Tensor:
    """ArcFace's margined target cosine ``cos(θ_y + m)`` (unscaled), ``m`` a float or per-sample ``(B,)``.

    ``grad="exact"`` differentiates ``cos(arccos(c) + m)``; ``grad="insightface"`` reproduces arcface_torch
    since commit 657ae30: the value is the same, the gradient is that of the plain cosine,
    ``c + sg(cos(θ + m) − c)`` (straight-through). ``easy_margin`` keeps ``c`` where ``c <= 0``.
    ``fallback="threshold"`` (the official ArcFace code) replaces the non-monotonic part
    ``θ + m > π``, i.e. ``c <= cos(π − m)``, by ``c − m·sin(m)``; ``"none"`` keeps ``cos(θ + m)``.
    The arccos argument is clamped to ``[−1 + eps, 1 − eps]``.
    """
    # torch.full fills on the device; torch.as_tensor(x, device=cuda) copies from the host and waits for the GPU
    m = margin if isinstance(margin, Tensor) else torch.full((), float(margin), dtype=cos_y.dtype, device=cos_y.device)
    target = torch.cos(clamped_acos(cos_y, eps) + m)
    if easy_margin:
        target = torch.where(cos_y > 0, target, cos_y)
    elif fallback == "threshold":
        target = torch.where(cos_y > torch.cos(math.pi - m), target, cos_y - m * torch.sin(m))
    elif fallback != "none":
        raise ValueError(f"fallback must be 'threshold' or 'none', got {fallback!r}")
    if grad == "insightface":
        return cos_y + (target - cos_y).detach()
    if grad != "exact":
        raise ValueError(f"grad must be 'exact' or 'insightface', got {grad!r}")
    return target
