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
        clamp_eps: float | None,
    ) -> tuple[Tensor, Tensor]:
        column = labels.unsqueeze(1)
        row_scale = scale.unsqueeze(1) if scale.dim() == 1 else scale
        if clamp_eps is not None:  # one read to find out whether any cosine needs the clamp at all
            low, high = torch.aminmax(cos)
            clamp_eps = clamp_eps if bool(low < -1.0 + clamp_eps) or bool(high > 1.0 - clamp_eps) else None
        clamped = cos if clamp_eps is None else cos.clamp(-1.0 + clamp_eps, 1.0 - clamp_eps)
        logits = cos * row_scale if clamp_eps is None else clamped.mul_(row_scale)
        logits.scatter_(1, column, target_logit.unsqueeze(1).to(logits.dtype))
        log_prob = torch.log_softmax(logits, dim=1)
        loss = -log_prob.gather(1, column).squeeze(1)
        ctx.save_for_backward(cos, labels, scale, log_prob)
        ctx.mark_non_differentiable(logits)
        ctx.clamp_eps = clamp_eps
        return loss, logits

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor, _grad_logits: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        cos, labels, scale, log_prob = ctx.saved_tensors
        column = labels.unsqueeze(1)
        prob = log_prob.exp()  # softmax
        grad_target = (prob.gather(1, column).squeeze(1) - 1.0) * grad_loss
        prob.scatter_(1, column, 0.0)  # p_ij for j != y_i
        eps = ctx.clamp_eps
        grad_scale = None
        if ctx.needs_input_grad[3]:
            used = cos if eps is None else cos.clamp(-1.0 + eps, 1.0 - eps)
            per_sample = (prob * used).sum(1) * grad_loss
            grad_scale = per_sample if scale.dim() == 1 else per_sample.sum().reshape(scale.shape)
        if eps is not None:  # clamped cosines get no gradient
            prob.masked_fill_((cos < -1.0 + eps) | (cos > 1.0 - eps), 0.0)
        grad_cos = None
        if ctx.needs_input_grad[0]:
            row_factor = grad_loss * scale  # g_i s_i, one pass over (B, C)
            grad_cos = prob.mul_(row_factor.unsqueeze(1))
        return grad_cos, None, grad_target, grad_scale, None


def margin_cross_entropy(
    cos: Tensor, labels: Tensor, target_logit: Tensor, scale: float | Tensor, *, clamp_eps: float | None = None
) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy ``(B,)`` and the detached final logits ``(B, C)``.

    Args:
        cos: cosines ``(B, C)``; the target column is ignored (its value enters through ``target_logit``).
        labels: class indices ``(B,)`` into the columns of ``cos``.
        target_logit: the scaled, margined target logit ``t_i`` ``(B,)``.
        scale: ``s``, a float or a per-sample tensor ``(B,)`` (gradient supported).
        clamp_eps: clamp the non-target cosines to ``[−1 + eps, 1 − eps]`` (``None``: no clamp).
    """
    scale_t = scale if isinstance(scale, Tensor) else torch.tensor(float(scale), dtype=cos.dtype, device=cos.device)
    return _MarginCrossEntropy.apply(cos, labels, target_logit, scale_t.to(cos.dtype), clamp_eps)
