"""Softmax cross-entropy over cosine logits whose target column carries a margin, fused in one function.

    z_ij = s_i · cos_ij  (j ≠ y_i),   z_iy = t_i,   loss_i = logsumexp_j z_ij − t_i

``t_i`` (the margined target logit) and ``s_i`` (a constant or a per-sample tensor, e.g. ScaleFace's
predicted scale) come from the caller with their own autograd graphs. The backward pass writes the
softmax gradient once: ∂loss_i/∂cos_ij = s_i (p_ij − 0) for j ≠ y_i, ∂loss_i/∂t_i = p_iy − 1 and
∂loss_i/∂s_i = Σ_{j≠y_i} p_ij cos_ij. The target column of ``cos`` gets no gradient from here; it reaches
``cos_iy`` only through ``t_i``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
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


class _ShardedMarginCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        cos: Tensor,
        labels: Tensor,
        target_logit: Tensor,
        scale: Tensor,
        clamp_eps: float | None,
        group: dist.ProcessGroup | None,
    ) -> tuple[Tensor, Tensor]:
        owned = labels >= 0
        column = labels.clamp_min(0).unsqueeze(1)
        row_scale = scale.unsqueeze(1) if scale.dim() == 1 else scale
        target = target_logit.to(cos.dtype)
        batch, width = cos.shape
        if clamp_eps is not None and width:  # the clamp changes nothing when no local cosine reaches it
            low, high = torch.aminmax(cos)
            clamp_eps = clamp_eps if bool(low < -1.0 + clamp_eps) or bool(high > 1.0 - clamp_eps) else None
        clamped = cos if clamp_eps is None or not width else cos.clamp(-1.0 + clamp_eps, 1.0 - clamp_eps)
        logits = cos * row_scale if clamped is cos else clamped.mul_(row_scale)
        if width:
            logits.scatter_(1, column, torch.where(owned, target, logits.gather(1, column).squeeze(1)).unsqueeze(1))
            local_max = logits.amax(dim=1)
        else:
            local_max = torch.full((batch,), -math.inf, dtype=cos.dtype, device=cos.device)
        dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=group)
        row_max = local_max  # M_i, global
        exp = (logits - row_max.unsqueeze(1)).exp_()  # unnormalised p, local columns
        need_scale = scale.requires_grad
        sums = [exp.sum(1)]
        if need_scale:  # Σ_{j≠y} e^{z_ij − M_i} c_ij, the numerator of ∂loss_i/∂s_i
            used = cos if clamp_eps is None else cos.clamp(-1.0 + clamp_eps, 1.0 - clamp_eps)
            weighted = exp * used
            if width:
                weighted.scatter_(
                    1, column, torch.where(owned, 0.0, weighted.gather(1, column).squeeze(1)).unsqueeze(1)
                )
            sums.append(weighted.sum(1))
        reduced = torch.stack(sums)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
        total = reduced[0]  # S_i, global
        loss = total.log() + row_max - target
        p_target = (target - row_max).exp() / total
        scale_term = reduced[1] / total if need_scale else None
        exp.div_(total.unsqueeze(1))  # p_ij, local columns
        ctx.save_for_backward(cos, labels, scale, exp, p_target, scale_term)
        ctx.mark_non_differentiable(logits)
        ctx.clamp_eps = clamp_eps
        return loss, logits

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor, _grad_logits: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        cos, labels, scale, prob, p_target, scale_term = ctx.saved_tensors
        grad_target = (p_target - 1.0) * grad_loss  # replicated: p_iy is known on every rank
        grad_scale = None
        if ctx.needs_input_grad[3]:
            per_sample = scale_term * grad_loss  # replicated (the sum over shards was all-reduced forward)
            grad_scale = per_sample if scale.dim() == 1 else per_sample.sum().reshape(scale.shape)
        grad_cos = None
        if ctx.needs_input_grad[0] and prob.shape[1]:
            owned = labels >= 0
            column = labels.clamp_min(0).unsqueeze(1)
            prob.scatter_(1, column, torch.where(owned, 0.0, prob.gather(1, column).squeeze(1)).unsqueeze(1))
            eps = ctx.clamp_eps
            if eps is not None:
                prob.masked_fill_((cos < -1.0 + eps) | (cos > 1.0 - eps), 0.0)
            grad_cos = prob.mul_((grad_loss * scale).unsqueeze(1))
        elif ctx.needs_input_grad[0]:
            grad_cos = torch.zeros_like(cos)
        return grad_cos, None, grad_target, grad_scale, None, None


def sharded_margin_cross_entropy(
    cos: Tensor,
    labels: Tensor,
    target_logit: Tensor,
    scale: float | Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    clamp_eps: float | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`margin_cross_entropy` over class centres sharded across the ranks of ``group``.

    Every rank passes the cosines of the GLOBAL batch against its own classes, ``cos (B_g, C_r)``, and the
    replicated per-sample ``target_logit`` ``t_i`` and ``scale`` ``s_i``; ``labels (B_g,)`` are columns of
    ``cos`` where the class lives on this rank and ``−1`` elsewhere. With ``z^r_ij = s_i c^r_ij`` and the target
    column replaced by ``t_i`` on its owner::

        M_i = max_r max_j z^r_ij  (all_reduce max),   S_i = Σ_r Σ_j e^{z^r_ij − M_i}  (all_reduce sum)
        loss_i = log S_i + M_i − t_i

    ``loss_i`` is identical on every rank. Backward (``g_i`` = the replicated ``∂L/∂loss_i``):
    ``∂/∂c^r_ij = g_i s_i p^r_ij`` (``j ≠ y_i``, shard-partial, this rank's columns only),
    ``∂/∂t_i = g_i (p_iy − 1)`` with ``p_iy = e^{t_i − M_i}/S_i`` known on every rank, and
    ``∂/∂s_i = g_i Σ_r Σ_{j≠y_i} p^r_ij c^r_ij`` (the shard sum is all-reduced in the forward pass when
    ``scale`` requires a gradient), both replicated. No collective runs in the backward pass.

    Returns ``(loss (B_g,), logits (B_g, C_r))``, the logits detached (this rank's final logits).
    """
    scale_t = scale if isinstance(scale, Tensor) else torch.tensor(float(scale), dtype=cos.dtype, device=cos.device)
    return _ShardedMarginCrossEntropy.apply(cos, labels, target_logit, scale_t.to(cos.dtype), clamp_eps, group)
