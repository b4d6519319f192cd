"""Class centres sharded over the ranks of a process group (model parallel, arcface_torch ``partial_fc_v2``).

Layout. With ``W`` ranks and ``C`` classes, rank ``r`` holds the contiguous block of global classes
``[class_start, class_start + num_local)``::

    num_local   = C // W + (r < C % W)
    class_start = (C // W)·r + min(r, C % W)

Forward pass of a sharded head on rank ``r`` (local batch ``B``, global batch ``B_g = W·B``):

1. the local embeddings, labels and auxiliary inputs are all-gathered (rank 0's samples first), so every
   rank sees the whole batch;
2. cosines ``cos (B_g, C_r')`` are computed against the local (optionally sampled) shard only; a label
   lives on exactly one rank (its *owner*), elsewhere its column is ``−1``;
3. the target cosine ``c_i = cos θ_{i y_i}`` is taken on the owner and all-reduced (summed; the other ranks
   contribute 0), so ``c_i``, the feature norms ``‖f_i‖`` and the auxiliary inputs are *replicated*: every
   per-sample quantity (margined target logit ``t_i``, scale ``s_i``, regularisers) is computed identically
   on every rank;
4. the softmax cross-entropy is distributed (:func:`~qualiface.functional.margin_ce.margin_cross_entropy` with
   ``owned``)::

       M_i = max_r max_j z^r_ij,   S_i = Σ_r Σ_j exp(z^r_ij − M_i),   loss_i = log S_i + M_i − t_i

   with ``z^r_ij = s_i cos^r_ij`` and the target column replaced by ``t_i`` on the owner only.
   ``loss_i``, and hence the global-batch mean ``L = mean_i loss_i``, is identical on every rank.

Gradient scheme. The trainer calls ``L.backward()`` on every rank and then *sums* the backbone parameter
gradients over ranks (a DDP comm hook), so rank ``r``'s local embeddings must receive exactly ``∂L/∂f_i`` for
its own samples, with every shard's contribution included and nothing counted twice. Every tensor in the
head is of one of two kinds:

* *replicated*: identical value on every rank, and its gradient ``∂L/∂(value)`` is also identical on every
  rank (``t_i``, ``s_i``, ``‖f_i‖``, the auxiliary inputs, the loss itself, a replicated parameter such as
  UniTSFace's ``b``);
* *shard-partial*: a quantity that lives on one rank (the local cosines, the local weight rows, the local
  USS terms) or whose gradient is only this rank's share of the total (the gathered embeddings used by
  the local cosines).

The conversions, each an autograd function here:

* partial → replicated, :func:`sum_partial` (forward ``all_reduce``-sum, backward identity): the replicated
  gradient reaches every rank's local share once, e.g. the owner's target cosine; the other ranks
  contributed 0 and their zero gradient is harmless.
* replicated → partial, :func:`copy_to_partial` (forward identity, backward ``all_reduce``-sum): a
  replicated parameter used in a shard-partial term (UniTSFace's ``b`` in the USS sum over the local memory
  rows) receives the sum of the ranks' partial gradients, i.e. the full ``∂L/∂b`` on every rank.
* the batch gather, :func:`gather_batch`, one collective for two kinds of columns. The embeddings ``f``,
  used only by shard-partial terms (``f`` → ``x̂ = f/‖f‖`` → local cosines, local USS terms), have a
  *summing* backward: the
  ``(B_g, D)`` gradient is summed over ranks (``reduce_scatter`` with NCCL, ``all_reduce`` then a slice
  elsewhere) and the rank keeps its own rows. The replicated columns (the norms ``‖f_i‖``, computed locally
  before the gather, and the auxiliary inputs ``scale`` / ``quality``) have a *slicing* backward: the
  gradient is already the full one on every rank, the rank keeps its own rows, counted once.

After ``L.backward()`` on every rank, rank ``r``'s local embeddings and auxiliary tensors hold exactly
``∂L/∂f_i`` (resp. ``∂L/∂aux_i``) for the samples ``i`` of rank ``r``'s batch: the shard-partial shares of all
ranks are summed inside the gather's backward and the replicated share is counted once. The trainer may then
sum the backbone parameter gradients over ranks (not average them) to obtain ``∂L/∂θ``. ``weight`` receives
``∂L/∂W_local``; replicated parameters receive the full ``∂L/∂b``, identical on every rank.

Collectives in the backward pass (the gather's sum, ``copy_to_partial``) run on every rank because every
rank builds the same graph; the heads keep the gathered embeddings in the graph even when a rank's shard
has no sampled class. Hence every rank must call the head in the same mode (``train()``/``eval()``), with the
same auxiliary inputs, the same local batch size and the same ``requires_grad`` settings, and must call
``backward()``. With ``validate_inputs`` (a head's default) the batch sizes and the inputs' validity are
exchanged first, so a wrong batch size or invalid inputs on one rank make every rank raise; without it (the
trainer, whose batches have one size by construction) that exchange and its host read are skipped.

One process is the shard ``ShardSpec(0, 1)`` (:data:`SINGLE_PROCESS`, every head's default): every function
here is then the identity (no collective, no process group), so a head has one forward pass, one
preparation, one cross-entropy and one hardest-negative search for both cases.

Memory: nothing of size ``(B_g, C)`` is allocated; the local ``(B_g, C_r')`` cosines, logits and
probabilities are what a single-process head allocates for ``C_r'`` classes. The forward pass runs two
all-gathers (labels; embeddings with the replicated columns), plus one of the batch sizes and failure flags
when the head validates its inputs (``validate_inputs``, off in the trainer), two small all-reduces in the
cross-entropy (row maximum of the local log-sum-exps; their shifted sums, plus ``Σ p·cos`` when the scale
needs a gradient) and one for the target cosine; the backward pass one reduce-scatter (all-reduce with gloo)
of ``(B_g, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor

from qualiface.functional._autograd import apply
from qualiface.functional.margins import l2_normalize

__all__ = [
    "SINGLE_PROCESS",
    "GatheredBatch",
    "ShardSpec",
    "all_gather_labels",
    "all_reduce_max",
    "all_reduce_sum_",
    "check_batch_sizes",
    "copy_to_partial",
    "gather_batch",
    "gather_head_inputs",
    "sum_partial",
]


@dataclass(frozen=True)
class ShardSpec:
    """Which block of the class centres this process holds.

    Attributes:
        rank: this process's rank within ``group``.
        world_size: number of ranks sharing the class centres.
        group: the process group of the collectives; ``None`` is the default group. With
            ``world_size == 1`` no collective is ever called (no process group needed).
    """

    rank: int
    world_size: int
    group: dist.ProcessGroup | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"ShardSpec: world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"ShardSpec: rank must be in [0, {self.world_size}), got {self.rank}")

    def num_local(self, num_classes: int) -> int:
        """``C // W + (rank < C % W)``: the number of classes on this rank."""
        return num_classes // self.world_size + int(self.rank < num_classes % self.world_size)

    def class_start(self, num_classes: int) -> int:
        """``(C // W)·rank + min(rank, C % W)``: the first global class on this rank."""
        return num_classes // self.world_size * self.rank + min(self.rank, num_classes % self.world_size)

    @property
    def distributed(self) -> bool:
        """Whether collectives are needed (``world_size > 1``)."""
        return self.world_size > 1


SINGLE_PROCESS = ShardSpec(0, 1)
"""Every class centre in this process: the collectives below do nothing."""


# ``all_gather_single`` / ``reduce_scatter_single`` replace the ``*_tensor`` names in recent torch releases
_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _backend_is_nccl(group: dist.ProcessGroup | None) -> bool:
    try:
        return dist.get_backend(group) == "nccl"
    except (RuntimeError, ValueError):  # pragma: no cover - unusual groups
        return False


def all_reduce_sum_(tensor: Tensor, spec: ShardSpec) -> Tensor:
    """In place ``all_reduce``-sum over the shard's group, no autograd; returns ``tensor``."""
    if not spec.distributed:
        return tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=spec.group)
    return tensor


def all_reduce_max(tensor: Tensor, spec: ShardSpec) -> Tensor:
    """``all_reduce``-max of a copy of ``tensor`` (detached; ``tensor`` itself, detached, in one process)."""
    if not spec.distributed:
        return tensor.detach()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX, group=spec.group)
    return out


def _all_gather(tensor: Tensor, spec: ShardSpec) -> Tensor:
    """``(W·B, ...)`` concatenation of every rank's ``(B, ...)`` tensor, rank order."""
    out = tensor.new_empty((spec.world_size * tensor.shape[0], *tensor.shape[1:]))
    _ALL_GATHER(out, tensor.contiguous(), group=spec.group)
    return out


def all_gather_labels(labels: Tensor, spec: ShardSpec) -> Tensor:
    """All-gathered ``int64`` labels ``(W·B,)`` (no autograd)."""
    if not spec.distributed:
        return labels.to(torch.int64)
    return _all_gather(labels.to(torch.int64), spec)


def check_batch_sizes(
    batch: int, failed: bool, spec: ShardSpec, device: torch.device | None = None
) -> tuple[list[int], list[int]]:
    """One small all-gather of every rank's ``(batch size, failed flag)``: ``(sizes, failed ranks)``.

    Run before any collective whose shape depends on the batch, so that a wrong batch size or an invalid
    input on one rank makes every rank raise instead of hanging (by a head with ``validate_inputs``). In one
    process: ``([batch], [0] if failed else [])``, no collective.
    """
    if not spec.distributed:
        return [batch], [spec.rank] if failed else []
    info = _all_gather(torch.tensor([[batch, int(failed)]], dtype=torch.int64, device=device), spec).cpu()
    sizes = [int(v) for v in info[:, 0]]
    bad = [rank for rank, flag in enumerate(info[:, 1].tolist()) if flag]
    return sizes, bad


class _GatherBatch(torch.autograd.Function):
    """All-gather ``partial (B, D)`` and ``replicated (B, K)`` in one collective; see the module docstring."""

    @staticmethod
    def forward(ctx: Any, spec: ShardSpec, partial: Tensor, replicated: Tensor) -> tuple[Tensor, Tensor]:
        ctx.spec = spec
        ctx.batch = partial.shape[0]
        ctx.dim = partial.shape[1]
        gathered = _all_gather(torch.cat([partial, replicated.to(partial.dtype)], dim=1), spec)
        return gathered[:, : ctx.dim].contiguous(), gathered[:, ctx.dim :].contiguous()

    @staticmethod
    def backward(ctx: Any, grad_partial: Tensor, grad_replicated: Tensor) -> tuple[Tensor | None, ...]:
        spec: ShardSpec = ctx.spec
        rows = slice(spec.rank * ctx.batch, (spec.rank + 1) * ctx.batch)
        grad_p = grad_r = None
        if ctx.needs_input_grad[1]:
            full = grad_partial.contiguous()
            if _backend_is_nccl(spec.group):
                grad_p = full.new_empty((ctx.batch, ctx.dim))
                _REDUCE_SCATTER(grad_p, full, op=dist.ReduceOp.SUM, group=spec.group)
            else:
                full = full.clone()
                dist.all_reduce(full, op=dist.ReduceOp.SUM, group=spec.group)
                grad_p = full[rows]
        if ctx.needs_input_grad[2]:
            grad_r = grad_replicated[rows]
        return None, grad_p, grad_r


def gather_batch(partial: Tensor, replicated: Tensor, spec: ShardSpec) -> tuple[Tensor, Tensor]:
    """All-gather the local ``partial (B, D)`` and ``replicated (B, K)`` columns of the batch.

    Returns ``(W·B, D)`` and ``(W·B, K)``. Backward: the first output's gradient is summed over ranks (its
    users are shard-partial), the second's is only sliced (its users are replicated); each rank keeps its
    own rows. Every rank must pass the same ``B`` (check with :func:`check_batch_sizes` first). In one
    process: the inputs themselves.
    """
    if not spec.distributed:
        return partial, replicated
    return cast("tuple[Tensor, Tensor]", apply(_GatherBatch, spec, partial, replicated))


class _SumPartial(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, spec: ShardSpec) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=spec.group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        return grad, None


def sum_partial(tensor: Tensor, spec: ShardSpec) -> Tensor:
    """Shard-partial → replicated: ``all_reduce``-sum forward, identity backward (the identity in one process)."""
    if not spec.distributed:
        return tensor
    return cast("Tensor", apply(_SumPartial, tensor, spec))


class _CopyToPartial(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, spec: ShardSpec) -> Tensor:
        ctx.spec = spec
        return tensor.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=ctx.spec.group)
        return out, None


def copy_to_partial(tensor: Tensor, spec: ShardSpec) -> Tensor:
    """Replicated → shard-partial: identity forward, ``all_reduce``-sum backward (a replicated parameter
    used in shard-partial terms gets its full gradient on every rank; the identity in one process)."""
    if not spec.distributed:
        return tensor
    return cast("Tensor", apply(_CopyToPartial, tensor, spec))


@dataclass(frozen=True)
class GatheredBatch:
    """The batch a head computes on: the global batch under a distributed shard, the local one otherwise.

    Attributes:
        embeddings: raw ``(B_g, D)`` (shard-partial users: summing backward).
        x_hat: ``f / max(‖f‖, eps)`` ``(B_g, D)``.
        norms: ``‖f‖`` ``(B_g,)``, unclamped (replicated: slicing backward).
        labels: global class ids ``(B_g,)``.
        aux: auxiliary inputs ``(B_g,)`` each (replicated).
    """

    embeddings: Tensor
    x_hat: Tensor
    norms: Tensor
    labels: Tensor
    aux: dict[str, Tensor]


def gather_head_inputs(
    embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor], spec: ShardSpec, eps: float
) -> GatheredBatch:
    """Gather a head's inputs over the shard's group (rank 0's samples first); see the module docstring.

    ``‖f‖`` and the auxiliary inputs are replicated quantities, gathered with a slicing backward (counted
    once); ``f`` itself feeds the shard-partial cosines and is gathered with a summing backward. In one
    process nothing is gathered and ``x̂``, ``‖f‖`` come from one normalisation of the local batch.
    """
    if not spec.distributed:
        x_hat, norms = l2_normalize(embeddings, eps)
        return GatheredBatch(embeddings, x_hat, norms, all_gather_labels(labels, spec), aux)
    keys = sorted(aux)  # the same order on every rank
    replicated = torch.stack([torch.linalg.vector_norm(embeddings, dim=1), *(aux[k] for k in keys)], dim=1)
    emb_g, replicated_g = gather_batch(embeddings, replicated, spec)
    return GatheredBatch(
        emb_g,
        l2_normalize(emb_g, eps)[0],
        replicated_g[:, 0],
        all_gather_labels(labels, spec),
        {k: replicated_g[:, 1 + i] for i, k in enumerate(keys)},
    )
