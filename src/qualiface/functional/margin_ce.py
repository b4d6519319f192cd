"""Softmax cross-entropy over cosine logits whose target column carries a margin, fused in one function.

    z_ij = s_i · cos_ij  (j ≠ y_i),   z_iy = t_i,   loss_i = logsumexp_j z_ij − t_i

``t_i`` (the margined target logit) and ``s_i`` (a constant or a per-sample tensor, e.g. ScaleFace's
predicted scale) come from the caller with their own autograd graphs. The backward pass writes the
softmax gradient once: ∂loss_i/∂cos_ij = s_i p_ij for j ≠ y_i, ∂loss_i/∂t_i = p_iy − 1 and
∂loss_i/∂s_i = Σ_{j≠y_i} p_ij cos_ij. The target column of ``cos`` gets no gradient from here; it reaches
``cos_iy`` only through ``t_i``.

The same function serves class centres sharded over the ranks of a process group (Partial FC model
parallel): each rank passes the cosines of the global batch against its own classes, ``owned`` says which
rows' target lives here, and the log-sum-exp is combined over ranks from the local ones::

    L^r_i = logsumexp_j z^r_ij,   M_i = max_r L^r_i,   lse_i = M_i + log Σ_r e^{L^r_i − M_i}

(two all-reduces of ``(B,)`` vectors); each rank's ``log_softmax`` over its own columns then moves by the row
shift ``L^r_i − lse_i``. In one process nothing is combined and the shift is zero. ``loss_i`` is identical on
every rank, and the gradients to ``t_i`` and ``s_i`` are replicated: the shard sum ``Σ_r Σ_j p^r_ij c^r_ij`` is
all-reduced in the forward pass when ``s`` needs a gradient, so no collective runs in the backward pass.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor

from qualiface.functional._autograd import apply


def _clamped(cos: Tensor, eps: float | None) -> Tensor:
    return cos if eps is None else cos.clamp(-1.0 + eps, 1.0 - eps)


def _zero_owned(values: Tensor, column: Tensor, owned: Tensor | None) -> Tensor:
    """``(B, 1)`` entries for ``values.scatter_(1, column, ·)``: 0 on the rows whose target column is here, the
    current value elsewhere (a row whose class lives on another rank keeps its local column)."""
    if owned is None:
        return values.new_zeros(column.shape)
    return torch.where(owned.unsqueeze(1), 0.0, values.gather(1, column))


def _probabilities(log_prob: Tensor, shift: Tensor | None) -> Tensor:
    """``p_ij`` from this process's log-probabilities and, over shards, the row shift to the global normaliser."""
    return log_prob.exp() if shift is None else (log_prob + shift.unsqueeze(1)).exp_()


def _scale_factor(prob: Tensor, cos: Tensor, column: Tensor, owned: Tensor | None, eps: float | None) -> Tensor:
    """``Σ_{j≠y} p_ij c_ij`` over this process's columns (``c`` clamped as the logits were), the factor of
    ``∂loss_i/∂s_i``."""
    weighted = prob * _clamped(cos, eps)
    if weighted.shape[1]:
        weighted.scatter_(1, column, _zero_owned(weighted, column, owned))
    return weighted.sum(1)


class _MarginCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        cos: Tensor,
        labels: Tensor,
        target_logit: Tensor,
        scale: Tensor,
        clamp_eps: float | None,
        owned: Tensor | None,
        group: dist.ProcessGroup | None,
    ) -> tuple[Tensor, Tensor]:
        column = labels.clamp_min(0).unsqueeze(1) if owned is not None else labels.unsqueeze(1)
        row_scale = scale.unsqueeze(1) if scale.dim() == 1 else scale
        target = target_logit.to(cos.dtype)
        width = cos.shape[1]
        logits = cos * row_scale if clamp_eps is None else _clamped(cos, clamp_eps).mul_(row_scale)
        if width:
            value = target if owned is None else torch.where(owned, target, logits.gather(1, column).squeeze(1))
            logits.scatter_(1, column, value.unsqueeze(1))
        log_prob = torch.log_softmax(logits, dim=1)  # normalised over this process's columns (fused, one pass)
        shift = None
        if owned is None:
            loss = -log_prob.gather(1, column).squeeze(1)  # = logsumexp_j z_ij - t_i
        else:  # combine the ranks' log-sum-exps: every rank ends with the global one, and log p moves by a row shift
            local = torch.logsumexp(logits, dim=1)  # -inf for a shard without a local column
            row_max = local.clone()
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
            total = (local - row_max).exp_()
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
            lse = total.log_().add_(row_max)
            shift = local - lse
            loss = lse - target
        scale_term = None
        if scale.requires_grad and owned is not None:  # ∂loss_i/∂s_i needs a sum over every rank: taken here
            scale_term = _scale_factor(_probabilities(log_prob, shift), cos, column, owned, clamp_eps)
            dist.all_reduce(scale_term, op=dist.ReduceOp.SUM, group=group)
        p_target = (-loss).exp()  # p_iy = e^{t_i - lse_i}, known on every rank
        ctx.save_for_backward(cos, labels, scale, log_prob, shift, p_target, scale_term, owned)
        ctx.mark_non_differentiable(logits)
        ctx.clamp_eps = clamp_eps
        return loss, logits

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _grad_logits: Tensor | None) -> tuple[Tensor | None, ...]:
        cos, labels, scale, log_prob, shift, p_target, scale_term, owned = ctx.saved_tensors
        grad_target = (p_target - 1.0) * grad_loss  # replicated: p_iy is known on every rank
        need_cos, need_scale = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        column = labels.clamp_min(0).unsqueeze(1) if owned is not None else labels.unsqueeze(1)
        prob = _probabilities(log_prob, shift)  # a new tensor: the saved log p stays intact
        grad_scale = None
        if need_scale:  # in one process Σ_{j≠y} p_ij c_ij is taken here, from the p of the cosine gradient
            factor = scale_term if scale_term is not None else _scale_factor(prob, cos, column, owned, ctx.clamp_eps)
            per_sample = factor * grad_loss
            grad_scale = per_sample if scale.dim() == 1 else per_sample.sum().reshape(scale.shape)
        grad_cos = None
        if need_cos:  # g_i s_i p_ij, the target column and clamped cosines zeroed
            grad_cos = prob
            if grad_cos.shape[1]:
                grad_cos.scatter_(1, column, _zero_owned(grad_cos, column, owned))
                eps = ctx.clamp_eps
                if eps is not None:  # clamped cosines get no gradient
                    grad_cos.masked_fill_((cos < -1.0 + eps) | (cos > 1.0 - eps), 0.0)
            grad_cos.mul_((grad_loss * scale).unsqueeze(1))
        return grad_cos, None, grad_target, grad_scale, None, None, None


def margin_cross_entropy(
    cos: Tensor,
    labels: Tensor,
    target_logit: Tensor,
    scale: float | Tensor,
    *,
    clamp_eps: float | None = None,
    owned: Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy ``(B,)`` and the detached final logits ``(B, C)``.

    Args:
        cos: cosines ``(B, C)``; the target column is ignored (its value enters through ``target_logit``).
        labels: class indices ``(B,)`` into the columns of ``cos`` (``−1`` where ``owned`` is False).
        target_logit: the scaled, margined target logit ``t_i`` ``(B,)``.
        scale: ``s``, a float or a per-sample tensor ``(B,)`` (gradient supported).
        clamp_eps: clamp the non-target cosines to ``[−1 + eps, 1 − eps]`` (``None``: no clamp).
        owned: class centres sharded over the ranks of ``group``: ``(B,)`` bool, whether sample ``i``'s class
            is one of this rank's columns (see the module docstring). ``None``: every class is here, no
            collective.
        group: the process group of the shards (``None``: the default group); used only with ``owned``.
    """
    # torch.full fills on the device; torch.tensor(x, device=cuda) copies from the host and waits for the GPU
    scale_t = scale if isinstance(scale, Tensor) else torch.full((), float(scale), dtype=cos.dtype, device=cos.device)
    return cast(
        "tuple[Tensor, Tensor]",
        apply(_MarginCrossEntropy, cos, labels, target_logit, scale_t.to(cos.dtype), clamp_eps, owned, group),
    )
