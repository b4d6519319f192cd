"""A gloo worker for ``train.grad_clip_over=all`` with sharded class centres (tests/train/test_grad_clip_over.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import qualiface
from _helpers.ddp import init_gloo
from qualiface.heads.sharding import ShardSpec
from qualiface.train.clipping import clip_gradients, clip_set

NUM_CLASSES, DIM = 7, 4


def full_gradients(seed: int = 5) -> dict[str, torch.Tensor]:
    """The gradients of one global step: a backbone ``Linear(3, DIM)``, every class centre, UniTSFace's ``b``."""
    g = torch.Generator().manual_seed(seed)
    return {
        "backbone.weight": 3 * torch.randn(DIM, 3, generator=g),
        "backbone.bias": 3 * torch.randn(DIM, generator=g),
        "head.weight": 3 * torch.randn(NUM_CLASSES, DIM, generator=g),
        "head.bias": 3 * torch.randn(1, generator=g),
    }


def clip_rank(rank: int, world_size: int, max_norm: float) -> dict[str, Any]:
    """Each rank holds the replicated gradients and its own rows of the centres' gradient, then clips."""
    init_gloo(rank, world_size)
    backbone = nn.Linear(3, DIM)
    head = qualiface.create_head(
        "unitsface", embedding_dim=DIM, num_classes=NUM_CLASSES, shard=ShardSpec(rank, world_size)
    )
    full = full_gradients()
    start = head.class_start
    for name, param in [*(("backbone." + n, p) for n, p in backbone.named_parameters()), ("head.weight", head.weight)]:
        grad = full[name]
        param.grad = grad[start : start + head.num_local_classes].clone() if name == "head.weight" else grad.clone()
    head.bias.grad = full["head.bias"].clone()
    clip = clip_set("all", backbone, head)
    norm = clip_gradients(clip, max_norm)
    assert norm is not None
    return {
        "norm": norm,
        "start": start,
        "grads": {
            "backbone.weight": backbone.weight.grad,
            "backbone.bias": backbone.bias.grad,
            "head.weight": head.weight.grad,
            "head.bias": head.bias.grad,
        },
    }
