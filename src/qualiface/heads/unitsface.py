"""UniTSFace: unified-threshold sample-to-sample loss (Li et al., NeurIPS 2023; code ``CVI-SZU/UniTSFace``)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from qualiface.functional.margins import additive_cosine_target, l2_normalize
from qualiface.functional.uss import uss_loss
from qualiface.heads.base import Head, HeadInputs, MarginTerms
from qualiface.heads.sharding import (
    SINGLE_PROCESS,
    ShardSpec,
    all_reduce_max,
    all_reduce_sum_,
    copy_to_partial,
    sum_partial,
)
from qualiface.registry import HEADS

Combine = Literal["mean", "sum"]


@HEADS.register("unitsface")
class UniTSFace(Head):
    """CosFace sample-to-class loss plus the USS-m sample-to-sample loss with a learned unified threshold.

    ``L = w_cls · L_CosFace + w_uss · L_uss-m`` where ``L_CosFace`` uses ``s(cos θ_y − m)`` and, per sample,
    (paper Eq. 11/24, as coded with a clamp)::

        L_uss-m = softplus(−clamp(γ(cos⁺ − m_uss) − b, −γ, γ)) + Σ_{j≠y} softplus(clamp(γ cos⁻_j − b, −γ, γ))

    ``cos⁺`` and ``cos⁻_j`` are cosines to a memory bank ``feat_mem (C, D)`` that holds the last raw feature
    seen of every class: the positive is the own class's row, the negatives are the rows of all other classes.
    ``b = γ t`` is a learnable scalar; ``t = b / γ`` is the unified threshold (:attr:`threshold`). The clamp
    cuts the gradient of terms outside ``[−γ, γ]``; ``softplus`` replaces the code's ``log(1 + exp(·))``
    (same values, no overflow). Note that in the paper's ideal case (``cos⁺ = 1``, ``cos⁻ = −1``, ``m = 0``)
    every negative sits at ``−γ − b < −γ`` once ``b > 0``, so with the clamp the closed-form stationary
    ``b`` of the paper holds for the unclamped loss only.

    State (all checkpointed, moved with the module): ``feat_mem`` (zero-initialised; the official buffer is
    uninitialised memory) and ``seen`` (``(C,)`` bool): unseen rows are excluded from the negatives, and a
    sample whose class row is unseen has no positive term; ``bias`` (``b``, shape ``(1,)`` as the official
    parameter, kept in the module dtype where the code forces float32); ``num_steps`` (training forwards so far).

    Behaviour per forward:

    - ``b`` data-dependent initialisation: in any forward where ``b <= 0`` and some sample has a seen
      negative, ``b`` is set (no grad) to ``mean_i logsumexp_{j seen, j≠y_i}(γ cos⁻_ij)`` over the samples
      that have one, and that value is used in the same forward (as coded).
    - In training mode, AFTER the loss, ``feat_mem[y_k] ← sg(f_k)`` (raw features, batch order: the later
      sample of a class wins), the rows are marked seen and ``num_steps`` is incremented.
    - Schedule: the official code trains epoch 0 with CosFace only while the memory fills. Here the first
      ``uss_warmup_steps`` training forwards use ``L = L_CosFace`` with weight 1 whatever ``combine`` and
      ``uss_only`` say, as the code's epoch 0 (the USS term is not evaluated, ``b`` is not initialised,
      ``loss/uss`` is logged as 0); a trainer sets it to one epoch of steps to reproduce the paper.
      Default 0: USS from the first step (the first step has an empty memory and no USS terms).
    - ``combine="mean"`` (default, the paper's arithmetic average): ``w = (0.5, 0.5)``; ``combine="sum"``
      (official ``backbone.py``): ``w = (1, 1)``, twice the USS weight and the effective lr of shared weights.
    - ``uss_only=True`` (the paper's USS-only experiments, code ``combine=False``): ``L = L_uss-m`` alone and
      the class centres receive no gradient; ``logits`` still holds the detached CosFace logits and
      ``loss/cosface`` is still logged, for monitoring.

    With class sampling (``sample_rate < 1``) the CosFace term uses the sampled centres; the USS term uses
    the full memory (``uss_negatives="all"``, the paper's one negative per other identity, ``B × C`` cosines
    per step) or, with ``uss_negatives="sampled"``, only the memory rows of the sampled classes (a Partial FC
    style extension, not in the paper, that keeps the step cost proportional to the sampled classes).
    Without a shard the memory and the initialisation of ``b`` are per process: under plain DDP the memory
    must be all-gathered and ``b`` broadcast by the caller. With sharded class centres
    (``shard=ShardSpec(...)``) ``feat_mem`` and ``seen`` are sharded like ``weight`` (rank ``r`` holds the rows
    of its classes) and the head works on the all-gathered batch: the USS sum over negatives is this rank's
    partial sum over its memory rows, all-reduced; the positive term comes from the owner of the class; ``b``
    is replicated (its gradient is the all-reduced sum of the partial ones, identical on every rank) and its
    data-dependent initialisation uses a distributed ``logsumexp`` over the global batch, identical on every
    rank; each rank writes the memory rows it owns from the gathered batch (the later sample still wins).

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``.
        scale: CosFace ``s = 64``.
        margin: CosFace ``m = 0.4``.
        gamma: USS scale ``γ = 64`` (also the clamp bound).
        margin_uss: USS margin ``m = 0.1`` (``0`` gives the plain ``L_uss``).
        combine: ``"mean"`` (default, paper) or ``"sum"`` (code).
        uss_only: train with ``L_uss-m`` alone.
        uss_warmup_steps: CosFace-only training forwards before the USS term starts (0).
        uss_negatives: ``"all"`` (default, paper) or ``"sampled"`` memory rows as USS negatives.
        **kwargs: :class:`~qualiface.heads.base.Head` options (``sample_rate``, ...).

    Normalisation eps is 1e-5 (official ``F.normalize(·, eps=1e-5)``); class centres are Kaiming-normal
    (``a = 1``, fan-in: std ``1/sqrt(D)``).

    Logs: ``loss/cosface``, ``loss/uss``, ``unitsface/bias``, ``unitsface/threshold``,
    ``unitsface/seen_fraction`` and the shared head logs.
    """

    normalize_eps = 1e-5
    class_rows = frozenset({"weight", "feat_mem", "seen"})

    feat_mem: Tensor
    seen: Tensor
    num_steps: Tensor

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.4,
        gamma: float = 64.0,
        margin_uss: float = 0.1,
        combine: Combine = "mean",
        uss_only: bool = False,
        uss_warmup_steps: int = 0,
        uss_negatives: Literal["all", "sampled"] = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(embedding_dim, num_classes, **kwargs)
        if combine not in ("mean", "sum"):
            raise ValueError(f"combine must be 'mean' or 'sum', got {combine!r}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if uss_negatives not in ("all", "sampled"):
            raise ValueError(f"uss_negatives must be 'all' or 'sampled', got {uss_negatives!r}")
        if uss_warmup_steps < 0:
            raise ValueError(f"uss_warmup_steps must be >= 0, got {uss_warmup_steps}")
        self.scale = scale
        self.margin = margin
        self.gamma = gamma
        self.margin_uss = margin_uss
        self.combine: Combine = combine
        self.uss_only = uss_only
        self.uss_warmup_steps = uss_warmup_steps
        self.uss_negatives = uss_negatives
        self.bias = nn.Parameter(torch.zeros(1))
        self.register_buffer("feat_mem", torch.zeros(self.num_local_classes, embedding_dim))
        self.register_buffer("seen", torch.zeros(self.num_local_classes, dtype=torch.bool))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def init_centres_(self, weight: Tensor) -> None:
        """Class centres Kaiming-normal (``a = 1``, fan-in), std ``1/sqrt(D)``, as ``Normalized_Softmax_Loss``."""
        with torch.no_grad():
            nn.init.kaiming_normal_(weight, a=1, mode="fan_in", nonlinearity="leaky_relu")

    @property
    def threshold(self) -> Tensor:
        """The learned unified threshold ``t = b / γ`` (detached scalar)."""
        return self.bias.detach()[0] / self.gamma

    @property
    def weights(self) -> tuple[float, float]:
        """``(w_cls, w_uss)`` of the combined loss."""
        return (0.5, 0.5) if self.combine == "mean" else (1.0, 1.0)

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        target = self.scale * additive_cosine_target(inputs.cos_target, self.margin)
        labels = self._memory_rows(inputs)
        warming_up = self.uss_warmup_steps > 0 and int(self.num_steps) < self.uss_warmup_steps
        if warming_up:
            uss = None
        elif self.uss_negatives == "sampled" and inputs.class_index is not None:
            uss = self.uss_loss(inputs.x_hat, inputs.labels, inputs.class_index, shard=inputs.shard)
        else:
            uss = self.uss_loss(inputs.x_hat, labels, shard=inputs.shard)
        w_cls, w_uss = self.weights
        logs = {
            "loss/uss": inputs.cos_target.new_zeros(()) if uss is None else uss.detach().mean(),
            "unitsface/bias": self.bias.detach()[0].clone(),
            "unitsface/threshold": self.threshold.clone(),
            "unitsface/seen_fraction": self._seen_fraction(inputs.shard),
        }
        if self.training:  # after the loss terms that read the memory (batch order kept)
            self.update_memory(inputs.embeddings, labels, inputs.owned)
            self.num_steps += 1
        ce_log = "loss/cosface"
        if uss is None:
            return MarginTerms(target, self.scale, logs=logs, ce_log=ce_log)
        if self.uss_only:
            return MarginTerms(target, self.scale, extra_loss=uss, ce_weight=0.0, logs=logs, ce_log=ce_log)
        return MarginTerms(target, self.scale, extra_loss=w_uss * uss, ce_weight=w_cls, logs=logs, ce_log=ce_log)

    def _seen_fraction(self, shard: ShardSpec) -> Tensor:
        """Fraction of the classes whose memory row holds a feature (over every shard)."""
        seen_count = all_reduce_sum_(self.seen.sum().to(torch.float64), shard)
        return (seen_count / self.num_classes).float()

    @staticmethod
    def _memory_rows(inputs: HeadInputs) -> Tensor:
        """Each sample's own memory row (local rows under a shard, ``−1`` where the class lives elsewhere)."""
        if inputs.class_index is None:
            return inputs.labels
        if inputs.owned is None:
            return inputs.class_index[inputs.labels]
        rows = torch.full_like(inputs.labels, -1)
        owned = inputs.owned
        rows[owned] = inputs.class_index[inputs.labels[owned]]
        return rows

    def uss_loss(
        self, x_hat: Tensor, labels: Tensor, index: Tensor | None = None, *, shard: ShardSpec = SINGLE_PROCESS
    ) -> Tensor:
        """Per-sample ``L_uss-m`` ``(B,)`` of unit embeddings against the memory (initialises ``b`` if ``<= 0``).

        ``labels`` are memory rows, or columns of ``index`` when only the rows ``index`` are used. Under a
        distributed ``shard`` (collectives on its group) the memory is this rank's block, ``labels`` is ``−1``
        where the class lives on another rank, and the returned loss is the all-reduced, replicated total.
        """
        memory = self.feat_mem if index is None else self.feat_mem.index_select(0, index)
        seen = self.seen if index is None else self.seen.index_select(0, index)
        owned = labels >= 0 if shard.distributed else None
        if self.bias.detach().item() <= 0:  # b is replicated: every rank takes the same branch
            self._init_bias(x_hat, memory, seen, labels, owned, shard)
        bias = copy_to_partial(self.bias, shard)  # b gets the sum of the shards' partial gradients
        if memory.shape[0] == 0:  # no local row sampled: a zero share that keeps x_hat and b in the graph
            partial = x_hat[:, 0] * 0.0 + bias.to(x_hat.dtype) * 0.0
        else:
            partial = uss_loss(
                x_hat,
                bias,
                memory,
                seen,
                labels,
                gamma=self.gamma,
                margin=self.margin_uss,
                eps=self.normalize_eps,
                owned=owned,
            )
        return sum_partial(partial, shard)

    @torch.no_grad()
    def _init_bias(
        self, x_hat: Tensor, memory: Tensor, seen: Tensor, labels: Tensor, owned: Tensor | None, shard: ShardSpec
    ) -> None:
        """Official data-dependent initialisation of ``b``: mean over samples of ``logsumexp_j(γ cos⁻_ij)``.

        The ``logsumexp`` over every rank's negatives is ``M + log Σ_r Σ_j e^{γ cos − M}`` with the global row
        maximum ``M`` (all-reduced under a distributed shard), so ``b`` is the same on every rank.
        """
        memory_hat, _ = l2_normalize(memory.to(x_hat.dtype), self.normalize_eps)
        cos = x_hat @ memory_hat.t()
        negatives = seen.unsqueeze(0).expand_as(cos).clone()
        if negatives.shape[1]:  # the own row is not a negative (where it lives here)
            column = labels.clamp_min(0).unsqueeze(1)
            keep = negatives.new_zeros(column.shape) if owned is None else negatives.gather(1, column) & ~owned[:, None]
            negatives.scatter_(1, column, keep)
        logits = (self.gamma * cos).masked_fill_(~negatives, -math.inf)
        local_max = logits.amax(dim=1) if logits.shape[1] else logits.new_full((logits.shape[0],), -math.inf)
        row_max = all_reduce_max(local_max, shard)
        rows = torch.isfinite(row_max)  # samples with at least one seen negative on some rank
        if not bool(rows.any()):
            return
        shift = torch.where(rows, row_max, 0.0)
        total = all_reduce_sum_((logits - shift.unsqueeze(1)).exp_().sum(1), shard)
        lse = total[rows].log() + shift[rows]
        self.bias.fill_(lse.mean())

    @torch.no_grad()
    def update_memory(self, embeddings: Tensor, labels: Tensor, owned: Tensor | None = None) -> None:
        """``feat_mem[y_k] ← f_k`` for the raw features of a batch; the later sample of a class wins, and a
        non-finite feature is not written (no host read: a diverged step leaves the memory as it was).

        ``owned``: under a distributed shard, the samples whose class row lives here (the others are skipped).
        """
        if owned is not None:
            embeddings, labels = embeddings[owned], labels[owned]
        classes, inverse = torch.unique(labels, return_inverse=True)
        order = torch.arange(labels.numel(), device=labels.device)
        last = torch.full_like(classes, -1).scatter_reduce_(0, inverse, order, reduce="amax")
        values = embeddings.detach()[last].to(self.feat_mem.dtype)
        finite = torch.isfinite(values).all(dim=1)  # a non-finite feature (a diverged step) leaves its row as it was
        self.feat_mem[classes] = torch.where(finite.unsqueeze(1), values, self.feat_mem[classes])
        self.seen[classes] = self.seen[classes] | finite

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, scale={self.scale}, margin={self.margin}, gamma={self.gamma}, "
            f"margin_uss={self.margin_uss}, combine={self.combine!r}, uss_only={self.uss_only}, "
            f"uss_warmup_steps={self.uss_warmup_steps}"
        )


__all__ = ["UniTSFace"]
