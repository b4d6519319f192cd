"""UniTSFace's unified-threshold sample-to-sample (USS-m) loss against a memory of class features.

Per sample ``i`` with own class ``y_i`` (paper Eq. 11/24, as coded with the clamp to ``[−γ, γ]``)::

    uss_i = [seen_{y_i}] · softplus(−clamp(γ(cos⁺_i − m) − b, −γ, γ))
            + Σ_{j ≠ y_i, seen_j} softplus(clamp(γ cos_ij − b, −γ, γ))

``cos_ij`` is the cosine between the unit embedding ``x̂_i`` and memory row ``M_j``, ``cos⁺_i = cos_{i y_i}``.
``uss_i`` depends on ``x̂`` only through row ``i``, so the forward pass computes the local Jacobians
``∂uss_i/∂x̂_i`` and ``∂uss_i/∂b`` directly: the backward pass is two small products, nothing of size
``(B, C)`` is kept, and the memory may be overwritten (the UniTSFace update) before ``backward()`` runs.
Clamped terms get no gradient, as with ``torch.clamp`` (bounds inclusive).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from qualiface.functional._autograd import apply


class _USSLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x_hat: Tensor,
        bias: Tensor,
        memory: Tensor,
        seen: Tensor,
        labels: Tensor,
        gamma: float,
        margin: float,
        eps: float,
        owned: Tensor | None,
    ) -> Tensor:
        dtype = x_hat.dtype
        memory = memory.to(dtype)
        inv_norm = torch.linalg.vector_norm(memory, dim=1).clamp_min(eps).reciprocal_()
        column = labels.unsqueeze(1)
        b = bias.to(dtype).reshape(())
        seen_weight = seen.to(dtype)
        has_positive = seen_weight[labels]
        if owned is not None:  # sharded memory: rows whose class lives elsewhere have no positive here
            has_positive = has_positive * owned.to(dtype)

        cos = torch.mm(x_hat, memory.t()).mul_(inv_norm)
        cos_pos = cos.gather(1, column).squeeze(1)
        pos_arg = gamma * (cos_pos - margin) - b
        pos_inside = ((pos_arg >= -gamma) & (pos_arg <= gamma)).to(dtype)
        pos_clamped = pos_arg.clamp(-gamma, gamma)
        pos = F.softplus(-pos_clamped) * has_positive
        d_pos = -torch.sigmoid(-pos_clamped) * pos_inside * has_positive  # ∂uss_i / ∂pos_arg_i

        z = cos.mul_(gamma).sub_(b)  # γ cos − b, in place
        inside = (z >= -gamma) & (z <= gamma)
        z.clamp_(-gamma, gamma)
        softplus = F.softplus(z)
        # Σ over seen negatives = Σ over seen rows − the own row (seen exactly when the sample has a positive)
        neg = softplus @ seen_weight - softplus.gather(1, column).squeeze(1) * has_positive
        d_neg = torch.sigmoid_(z).mul_(inside).mul_(seen_weight)  # ∂uss_i / ∂z_ij, clamp mask, seen rows
        if owned is None:
            d_neg.scatter_(1, column, 0.0)  # the own row is not a negative
        else:
            d_neg.scatter_(1, column, d_neg.gather(1, column) * ~owned.unsqueeze(1))
        grad_bias = d_neg.sum(1).neg_() - d_pos  # ∂uss_i / ∂b
        if owned is None:
            d_neg.scatter_(1, column, d_pos.unsqueeze(1))  # the positive term's derivative sits in the own column
        else:
            d_neg.scatter_(1, column, torch.where(owned, d_pos, d_neg.gather(1, column).squeeze(1)).unsqueeze(1))
        d_neg.mul_(inv_norm * gamma)  # ∂uss_i / ∂(x̂_i · M_j)
        grad_x = torch.mm(d_neg, memory)  # ∂uss_i / ∂x̂_i
        ctx.save_for_backward(grad_x, grad_bias)
        ctx.bias_shape = bias.shape
        return pos + neg

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grad_x, grad_bias = ctx.saved_tensors
        gx = grad_x * grad_loss.unsqueeze(1) if ctx.needs_input_grad[0] else None
        gb = (grad_bias * grad_loss).sum().reshape(ctx.bias_shape) if ctx.needs_input_grad[1] else None
        return gx, gb, None, None, None, None, None, None, None


def uss_loss(
    x_hat: Tensor,
    bias: Tensor,
    memory: Tensor,
    seen: Tensor,
    labels: Tensor,
    *,
    gamma: float = 64.0,
    margin: float = 0.1,
    eps: float = 1e-5,
    owned: Tensor | None = None,
) -> Tensor:
    """Per-sample USS-m loss ``(B,)``; gradients to ``x_hat`` and the scalar ``bias`` only.

    Args:
        x_hat: unit embeddings ``(B, D)``.
        bias: ``b = γ·t`` (one element).
        memory: raw class features ``(C, D)``, normalised here with ``eps``.
        seen: ``(C,)`` bool, rows that hold a feature; unseen rows are neither positives nor negatives.
        labels: each sample's own row ``(B,)``.
        gamma: ``γ``, also the clamp bound.
        margin: ``m`` of USS-m (``0``: plain USS).
        eps: lower bound of the memory-row norms (UniTSFace's ``F.normalize(eps=1e-5)``).
        owned: memory rows sharded over ranks: ``(B,)`` bool, whether sample ``i``'s class row is here
            (``labels`` is ``−1`` elsewhere); the result is then this shard's share, whose sum over ranks is the
            loss on the whole memory (the positive term on the owner, the negatives of this rank's rows), with
            this shard's partial gradients. ``None``: the whole memory is here.
    """
    if owned is not None:
        labels = labels.clamp_min(0)
    return cast("Tensor", apply(_USSLoss, x_hat, bias, memory, seen, labels, gamma, margin, eps, owned))
