"""Gradient-norm clipping over the backbone alone or over every trained parameter (``train.grad_clip_over``).

``backbone`` (arcface_torch, CR-FIQA, ScaleFace) bounds the norm of the backbone's gradient, quality branch
included; the class centres are left as they are. ``all`` (UniTSFace's ``train.py``:
``clip_grad_norm_(model.parameters(), max_norm=10.0)``, where ``model`` holds the backbone and both losses)
bounds the joint norm of the backbone and every trainable head parameter.

Under DDP the backbone gradient is already summed over the ranks (identical everywhere), a replicated head
parameter such as UniTSFace's ``b`` has its full gradient on every rank, and the class centres are sharded:
each rank holds the gradient of its own rows. The global norm is then
``sqrt(|g_backbone|² + |g_replicated|² + Σ_ranks |g_centres,rank|²)``, one all-reduce of a scalar, and every
rank scales by the same factor, so the backbone stays identical across ranks. The factor is torch's
``clip_grad_norm_``: ``min(1, max_norm / (norm + 1e-6))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from qualiface.heads.base import Head
from qualiface.heads.sharding import SINGLE_PROCESS, ShardSpec, all_reduce_sum_

ClipOver = Literal["backbone", "all"]


@dataclass
class ClipSet:
    """The parameters one clip bounds.

    Attributes:
        replicated: parameters whose gradient is the same on every rank (the backbone's, a head's scalars).
        sharded: parameters holding this rank's block of a sharded tensor (the class centres under DDP).
        shard: the group over which ``sharded`` is split.
    """

    replicated: list[nn.Parameter]
    sharded: list[nn.Parameter] = field(default_factory=list)
    shard: ShardSpec = SINGLE_PROCESS


def clip_set(over: ClipOver, backbone: nn.Module, head: Head) -> ClipSet:
    """The trainable parameters ``over`` names (see the module docstring)."""
    if over not in ("backbone", "all"):
        raise ValueError(f"train.grad_clip_over must be 'backbone' or 'all', got {over!r}")
    replicated = [p for p in backbone.parameters() if p.requires_grad]
    if over == "backbone":
        return ClipSet(replicated)
    shard = head.shard
    centres = head.weight if shard.distributed else None
    sharded = [p for p in head.parameters() if p.requires_grad and p is centres]
    replicated += [p for p in head.parameters() if p.requires_grad and p is not centres]
    return ClipSet(replicated, sharded, shard)


def _squared_norm(params: list[nn.Parameter], device: torch.device) -> Tensor:
    """``Σ |grad|²`` in float32 over the parameters that have a gradient (sparse gradients coalesced)."""
    total = torch.zeros((), dtype=torch.float32, device=device)
    for p in params:
        if p.grad is not None:
            grad = p.grad.detach()
            values = grad.coalesce().values() if grad.is_sparse else grad
            total = total + torch.linalg.vector_norm(values, dtype=torch.float32).to(device).square()
    return total


def clip_gradients(clip: ClipSet, max_norm: float | None) -> Tensor | None:
    """Scale the gradients of ``clip`` so that their global L2 norm is at most ``max_norm``.

    Returns:
        The global norm before clipping, or ``None`` when ``max_norm`` is ``None`` or no parameter has a gradient
        (then nothing is changed).
    """
    if max_norm is None:
        return None
    params = clip.replicated + clip.sharded
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad and not clip.shard.distributed:
        return None
    if not clip.sharded:
        if not with_grad:
            return None
        return torch.nn.utils.clip_grad_norm_(with_grad, max_norm, foreach=True)
    device = (with_grad or params)[0].device
    local = _squared_norm(clip.sharded, device)
    total_sq = _squared_norm(clip.replicated, device) + all_reduce_sum_(local, clip.shard)
    total = total_sq.sqrt()
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in with_grad:
        if p.grad is not None:
            p.grad.detach().mul_(coefficient.to(p.grad.device, p.grad.dtype))
    return total
