"""Workers for ``tests/heads/test_sharded.py``: sharded heads in gloo processes against a single-process reference.

Every rank builds the same float64 reference head (fixed seed) and the same global batches, runs the reference on
the concatenated batch, then builds its shard of the head (weight rows, per-class buffers and replicated
parameters copied from the reference), runs it on its half of the batch and returns both, so the test compares
them in the parent process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

import qualiface
from _helpers.ddp import init_gloo
from qualiface.heads import ShardSpec

D = 8
C = 7  # uneven: 4 classes on rank 0, 3 on rank 1
B = 5  # per rank
STEPS = 2


def head_kwargs(name: str) -> dict[str, Any]:
    """Options that make every term of a head active on small random batches."""
    if name == "adaface":
        return {"t_alpha": 0.5}
    return {}


def make_batches(head: qualiface.heads.Head, world_size: int, seed: int = 7) -> list[dict[str, Tensor]]:
    """``STEPS`` global float64 batches: embeddings with norms in ``[5, 60]``, labels over every shard, aux.

    Sample 3 points exactly at class centre 4 while labelled 1: a non-target cosine of 1 (AdaFace's clamp).
    """
    gen = torch.Generator().manual_seed(seed)
    total = world_size * B
    batches = []
    for _ in range(STEPS):
        emb = torch.randn(total, D, generator=gen, dtype=torch.float64)
        norms = 5.0 + 55.0 * torch.rand(total, 1, generator=gen, dtype=torch.float64)
        emb = emb / emb.norm(dim=1, keepdim=True) * norms
        labels = torch.randint(0, C, (total,), generator=gen)
        labels[:2] = torch.tensor([0, C - 1])  # a class of each end lives in the batch
        labels[B : B + 2] = torch.tensor([C - 1, 1])  # and rank 1's half shares classes with rank 0's
        emb[3] = head.weight.detach()[4] / head.weight.detach()[4].norm() * 25.0
        labels[3] = 1
        aux = {
            "scale": 10.0 + 30.0 * torch.rand(total, generator=gen, dtype=torch.float64),
            "quality": torch.rand(total, generator=gen, dtype=torch.float64),
        }
        keys = head.requires | head.accepts
        batches.append({"emb": emb, "labels": labels, **{k: v for k, v in aux.items() if k in keys}})
    return batches


def _state(head: qualiface.heads.Head) -> dict[str, Tensor]:
    state = {k: v.detach().clone() for k, v in head.state_dict().items() if k != "weight"}
    return state


def _run(head: qualiface.heads.Head, batch: dict[str, Tensor], rows: slice) -> dict[str, Any]:
    """One training forward/backward of ``head`` on ``batch[rows]``; outputs, gradients and the state after."""
    head.zero_grad(set_to_none=True)
    emb = batch["emb"][rows].clone().requires_grad_(True)
    aux = {k: v[rows].clone().requires_grad_(True) for k, v in batch.items() if k not in ("emb", "labels")}
    out = head(emb, batch["labels"][rows], **aux)
    out.loss.backward()
    result: dict[str, Any] = {
        "loss": out.loss.detach(),
        "loss_per_sample": out.loss_per_sample.detach(),
        "cos_target": out.cos_target,
        "logits_shape": torch.tensor(list(out.logits.shape)) if out.logits is not None else torch.tensor([]),
        "labels": out.labels,
        "logs": {k: v.detach() for k, v in out.logs.items()},
        "grad_emb": emb.grad,
        "grad_aux": {k: v.grad for k, v in aux.items()},
        "grad_weight": head.weight.grad,
        "state": _state(head),
    }
    if out.cos_hardest_negative is not None:
        result["hardest"] = out.cos_hardest_negative
    bias = getattr(head, "bias", None)
    if isinstance(bias, torch.nn.Parameter):
        result["grad_bias"] = bias.grad
    return result


def compare_all_heads(rank: int, world_size: int) -> dict[str, Any]:
    """For every registered head: reference results on the concatenated batches and this rank's sharded ones."""
    init_gloo(rank, world_size)
    results = {}
    for name in qualiface.list_heads():
        torch.manual_seed(0)
        ref = qualiface.create_head(name, D, C, **head_kwargs(name)).double().train()
        spec = ShardSpec(rank, world_size)
        head = qualiface.create_head(name, D, C, shard=spec, **head_kwargs(name)).double().train()
        start, num = spec.class_start(C), spec.num_local(C)
        local_state = {}
        for key, value in ref.state_dict().items():  # shard the per-class tensors, copy the replicated ones
            local_state[key] = value[start : start + num] if value.dim() and value.shape[0] == C else value
        head.load_state_dict(local_state)
        batches = make_batches(ref, world_size)
        steps_ref, steps_shard = [], []
        for batch in batches:
            steps_ref.append(_run(ref, batch, slice(None)))
            steps_shard.append(_run(head, batch, slice(rank * B, (rank + 1) * B)))
        results[name] = {
            "reference": steps_ref,
            "sharded": steps_shard,
            "class_start": start,
            "num_local": num,
            "attrs": torch.tensor([head.class_start, head.num_local_classes, head.num_classes]),
        }
    return results


def sampled_heads(rank: int, world_size: int, sample_rate: float, sparse: bool) -> dict[str, Any]:
    """Every head with ``sample_rate < 1`` under a shard: losses, sampled rows and weight gradients."""
    init_gloo(rank, world_size)
    num_classes = 40
    results = {}
    cases = [(name, name, head_kwargs(name)) for name in qualiface.list_heads()]
    cases.append(("unitsface_sampled_negatives", "unitsface", {"uss_negatives": "sampled"}))
    for key, name, kwargs in cases:
        torch.manual_seed(100 + rank)  # each rank samples its own negatives
        spec = ShardSpec(rank, world_size)
        head = qualiface.create_head(
            name, D, num_classes, shard=spec, sample_rate=sample_rate, sparse_grad=sparse, **kwargs
        ).train()
        gen = torch.Generator().manual_seed(3)
        total = world_size * B
        emb = torch.randn(total, D, generator=gen) * 10.0
        labels = torch.randint(0, num_classes, (total,), generator=gen)
        aux = {"scale": 10.0 + 30.0 * torch.rand(total, generator=gen), "quality": torch.rand(total, generator=gen)}
        aux = {k: v for k, v in aux.items() if k in head.requires}
        rows = slice(rank * B, (rank + 1) * B)
        for _ in range(2):  # a second step: UniTSFace's USS term with a filled memory
            head.zero_grad(set_to_none=True)
            local = emb[rows].clone().requires_grad_(True)
            out = head(local, labels[rows], **{k: v[rows] for k, v in aux.items()})
            out.loss.backward()
        grad = head.weight.grad
        results[key] = {
            "loss": out.loss.detach(),
            "logs": {k: v.detach() for k, v in out.logs.items()},
            "class_index": out.class_index,
            "labels": out.labels,
            "global_labels": labels,
            "class_start": torch.tensor(head.class_start),
            "num_local": torch.tensor(head.num_local_classes),
            "grad_is_sparse": torch.tensor(bool(grad.is_sparse)),
            "grad_weight": grad.to_dense(),
            "grad_emb": local.grad,
        }
    return results


def bad_inputs(rank: int, world_size: int) -> dict[str, str]:
    """Unequal local batch sizes, then an invalid label on rank 1 only: every rank must raise, none hang."""
    init_gloo(rank, world_size)
    head = qualiface.create_head("arcface", D, C, shard=ShardSpec(rank, world_size))
    messages = {}
    try:
        batch = 4 if rank == 0 else 3
        head(torch.randn(batch, D), torch.zeros(batch, dtype=torch.long))
    except ValueError as exc:
        messages["sizes"] = str(exc)
    try:
        labels = torch.full((B,), C if rank == 1 else 0, dtype=torch.long)
        head(torch.randn(B, D), labels)
    except ValueError as exc:
        messages["labels"] = str(exc)
    # the group still works afterwards: a normal call succeeds on both ranks
    out = head(torch.randn(B, D), torch.zeros(B, dtype=torch.long))
    flag = torch.tensor([float(torch.isfinite(out.loss))])
    dist.all_reduce(flag)
    messages["after"] = str(int(flag.item()))
    return messages


def empty_local_sample(rank: int, world_size: int) -> dict[str, Any]:
    """Every label on rank 0's classes and a tiny ``sample_rate``: rank 1 samples no class at all."""
    init_gloo(rank, world_size)
    results = {}
    for name in qualiface.list_heads():
        torch.manual_seed(5)
        head = qualiface.create_head(name, D, 40, shard=ShardSpec(rank, world_size), sample_rate=0.01).train()
        gen = torch.Generator().manual_seed(9)
        emb = torch.randn(B, D, generator=gen) * 10.0
        emb.requires_grad_(True)
        labels = torch.randint(0, 20, (B,), generator=gen)
        aux = {"scale": torch.full((B,), 30.0), "quality": torch.full((B,), 0.5)}
        for _ in range(2):
            emb.grad = None
            out = head(emb, labels, **{k: v for k, v in aux.items() if k in head.requires})
            out.loss.backward()
        grad = head.weight.grad
        results[name] = {
            "loss": out.loss.detach(),
            "num_sampled": torch.tensor(out.class_index.numel()),
            "grad_emb": emb.grad,
            "grad_weight_abs": torch.tensor(0.0) if grad is None else grad.abs().sum(),
        }
    return results
