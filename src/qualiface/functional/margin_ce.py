"""Softmax cross-entropy over cosine logits whose target column carries a margin, fused in one function.

    z_ij = s_i · cos_ij  (j ≠ y_i),   z_iy = t_i,   loss_i = logsumexp_j z_ij − t_i

``t_i`` (the margined target logit) and ``s_i`` (a constant or a per-sample tensor, e.g. ScaleFace's
predicted scale) come from the caller with their own autograd graphs. The backward pass writes the
softmax gradient once: ∂loss_i/∂cos_ij = s_i (p_ij − 0) for j ≠ y_i, ∂loss_i/∂t_i = p_iy − 1 and
∂loss_i/∂s_i = Σ_{j≠y_i} p_ij cos_ij. The target column of ``cos`` gets no gradient from here; it reaches
``cos_iy`` only through ``t_i``.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _MarginCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        cos: Tensor,
        labels: Tensor,
        target_logit: Tensor,
        scale: Tensor,
    ) -> tuple[Tensor, Tensor]:
        column = labels.unsqueeze(1)
        logits = cos * scale.unsqueeze(1) if scale.dim() == 1 else cos * scale
        logits.scatter_(1, column, target_logit.unsqueeze(1).to(logits.dtype))
        lse = torch.logsumexp(logits, dim=1)
        loss = lse - target_logit
        ctx.save_for_backward(cos, labels, scale, logits, lse)
        ctx.mark_non_differentiable(logits)
        return loss, logits

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor, _grad_logits: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        cos, labels, scale, logits, lse = ctx.saved_tensors
        column = labels.unsqueeze(1)
        prob = (logits - lse.unsqueeze(1)).exp_()  # softmax
        grad_target = (prob.gather(1, column).squeeze(1) - 1.0) * grad_loss
        prob.mul_(grad_loss.unsqueeze(1))
        prob.scatter_(1, column, 0.0)  # dz_ij for j != y_i
        grad_scale = None
        if ctx.needs_input_grad[3]:
            per_sample = (prob * cos).sum(1)
            grad_scale = per_sample if scale.dim() == 1 else per_sample.sum().reshape(scale.shape)
        grad_cos = None
        if ctx.needs_input_grad[0]:
            grad_cos = prob.mul_(scale.unsqueeze(1) if scale.dim() == 1 else scale)
        return grad_cos, None, grad_target, grad_scale


def margin_cross_entropy(
    cos: Tensor, labels: Tensor, target_logit: Tensor, scale: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy ``(B,)`` and the detached final logits ``(B, C)``.

    Args:
        cos: cosines ``(B, C)``; the target column is ignored (its value enters through ``target_logit``).
        labels: class indices ``(B,)`` into the columns of ``cos``.
        target_logit: the scaled, margined target logit ``t_i`` ``(B,)``.
        scale: ``s``, a float or a per-sample tensor ``(B,)`` (gradient supported).
    """
    scale_t = scale if isinstance(scale, Tensor) else torch.tensor(float(scale), dtype=cos.dtype, device=cos.device)
    return _MarginCrossEntropy.apply(cos, labels, target_logit, scale_t.to(cos.dtype))
