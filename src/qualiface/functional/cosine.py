"""Cosine similarity between embeddings and class centres, with a hand-written gradient.

The usual recipe ``F.linear(F.normalize(x), F.normalize(W))`` materialises the normalised ``(C, D)``
weight and back-propagates through the normalisation, which dominates the cost for large ``C``. Here

    cos_ij = x̂_i · W_j · r_j,   r_j = 1 / max(||W_j||, eps)

is one GEMM followed by a column scaling, and the gradient is written out:

    ∂L/∂x̂_i = Σ_j G_ij r_j W_j
    ∂L/∂W_j = r_j Σ_i G_ij x̂_i − r_j² (Σ_i G_ij cos_ij) W_j

so the backward pass is two GEMMs plus one fused pass over ``W``. Given ``labels`` the layer also returns
``cos_target_i = cos_{i, y_i}`` as a second output whose gradient is folded into the same pass (an autograd
``gather`` would write and add a dense ``(B, C)`` zero gradient). With ``index`` (Partial FC class
sampling) only the selected rows are read; their gradient is returned either dense (zeros elsewhere) or
as a sparse COO tensor, which avoids writing a dense ``(C, D)`` gradient at millions of classes.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from qualiface.functional._autograd import apply


class _CosineMatrix(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x_hat: Tensor,
        weight: Tensor,
        index: Tensor | None,
        sparse_grad: bool,
        matmul_dtype: torch.dtype | None,
        eps: float,
        labels: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        w = weight if index is None else weight.index_select(0, index)
        inv_norm = torch.linalg.vector_norm(w, dim=1).clamp_min_(eps).reciprocal_()
        if matmul_dtype is None or matmul_dtype == w.dtype:
            cos = torch.mm(x_hat, w.t())
        else:
            cos = torch.mm(x_hat.to(matmul_dtype), w.to(matmul_dtype).t()).to(x_hat.dtype)
        cos.mul_(inv_norm)
        columns = labels if labels is not None else torch.zeros(x_hat.shape[0], dtype=torch.long, device=cos.device)
        cos_target = cos.gather(1, columns.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(x_hat, w, inv_norm, cos, index, columns)
        ctx.sparse_grad = sparse_grad
        ctx.matmul_dtype = matmul_dtype
        ctx.weight_shape = weight.shape
        return cos, cos_target

    @staticmethod
    def backward(ctx: Any, grad_cos: Tensor | None, grad_target: Tensor | None) -> tuple[Tensor | None, ...]:
        x_hat, w, inv_norm, cos, index, columns = ctx.saved_tensors
        g_scaled = cos.new_zeros(cos.shape) if grad_cos is None else grad_cos * inv_norm  # G_ij r_j
        if grad_target is not None:
            column = columns.unsqueeze(1)
            g_scaled.scatter_add_(1, column, (grad_target * inv_norm[columns]).unsqueeze(1))
        grad_x = grad_w = None
        low = ctx.matmul_dtype is not None and ctx.matmul_dtype != w.dtype
        if ctx.needs_input_grad[0]:
            if low:
                grad_x = torch.mm(g_scaled.to(ctx.matmul_dtype), w.to(ctx.matmul_dtype)).to(x_hat.dtype)
            else:
                grad_x = torch.mm(g_scaled, w)
        if ctx.needs_input_grad[1]:
            if low:
                grad_w = torch.mm(g_scaled.t().to(ctx.matmul_dtype), x_hat.to(ctx.matmul_dtype)).to(w.dtype)
            else:
                grad_w = torch.mm(g_scaled.t(), x_hat)
            coef = g_scaled.mul_(cos).sum(0).mul_(inv_norm)  # r_j² Σ_i G_ij cos_ij (g_scaled is spent)
            grad_w.addcmul_(w, coef.unsqueeze(1), value=-1.0)
            if index is not None:
                if ctx.sparse_grad:
                    grad_w = torch.sparse_coo_tensor(
                        index.unsqueeze(0), grad_w, ctx.weight_shape, is_coalesced=True, check_invariants=False
                    )
                else:
                    grad_w = grad_w.new_zeros(ctx.weight_shape).index_copy_(0, index, grad_w)
        return grad_x, grad_w, None, None, None, None, None


def cosine_matrix(
    x_hat: Tensor,
    weight: Tensor,
    index: Tensor | None = None,
    *,
    sparse_grad: bool = False,
    matmul_dtype: torch.dtype | None = None,
    eps: float = 1e-12,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Cosines ``(B, C')`` between unit embeddings ``x_hat (B, D)`` and the rows of ``weight (C, D)``.

    Args:
        x_hat: L2-normalised embeddings.
        weight: class centres, any norm; each row is normalised on the fly (``eps`` as ``F.normalize``).
        index: sorted unique row indices (Partial FC sampling); ``None`` uses every row.
        sparse_grad: with ``index``, return the weight gradient as a sparse COO tensor.
        matmul_dtype: run the GEMMs in this dtype (e.g. ``torch.bfloat16``) and everything else in the
            input dtype; ``None`` keeps the input dtype.
        eps: lower bound of the class-centre norm.
        labels: columns of the target classes; the second output is ``cos[i, labels[i]]`` (column 0 if omitted).

    Returns:
        ``(cos, cos_target)``.
    """
    return cast(
        "tuple[Tensor, Tensor]", apply(_CosineMatrix, x_hat, weight, index, sparse_grad, matmul_dtype, eps, labels)
    )


def sample_classes(
    labels: Tensor, num_classes: int, sample_rate: float, owned: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Partial FC sampling: every positive class plus random negatives, ``int(sample_rate * C)`` in all.

    Returns the sorted class indices to keep and the labels remapped into that index. When the batch
    holds more positive classes than the budget, all positives are kept (as in arcface_torch). With
    ``owned`` (sharded class centres) only the labels where it is True are positives of this shard, and the
    other labels map to ``−1``.
    """
    positives = torch.unique(labels if owned is None else labels[owned])
    num_sample = int(sample_rate * num_classes)
    if num_sample <= positives.numel():
        index = positives
    else:
        priority = torch.rand(num_classes, device=labels.device)
        priority[positives] = 2.0
        index = torch.topk(priority, k=num_sample, sorted=False).indices.sort().values
    columns = torch.searchsorted(index, labels)
    return index, columns if owned is None else torch.where(owned, columns, -1)
