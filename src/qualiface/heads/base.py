"""The one contract every margin head follows.

A head owns its class centres ``weight (num_classes, embedding_dim)`` and is called as
``head(embeddings, labels, **aux)`` with RAW embeddings. It validates its inputs, computes in float32 (or
float64 when the head itself is float64) even under autocast, and returns a :class:`HeadOutput`.

With ``shard=ShardSpec(rank, world_size)`` (model parallel, Partial FC) a head holds only its block of the
class centres and computes the loss of the all-gathered global batch; see :mod:`qualiface.heads.sharding`
for the layout, the distributed cross-entropy and the gradient scheme.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from qualiface.functional.cosine import cosine_matrix, sample_classes
from qualiface.functional.margin_ce import margin_cross_entropy, sharded_margin_cross_entropy
from qualiface.functional.margins import l2_normalize
from qualiface.heads.sharding import (
    ShardSpec,
    all_gather_labels,
    all_reduce_max,
    check_batch_sizes,
    gather_batch,
    sum_partial,
)


def uniform_unit_rows_(weight: Tensor) -> Tensor:
    """In place: uniform(−1, 1), then every row rescaled to unit L2 norm (MagFace's and AdaFace's class-centre
    initialisation)."""
    with torch.no_grad():
        weight.uniform_(-1.0, 1.0)
        weight.div_(torch.linalg.vector_norm(weight, dim=1, keepdim=True).clamp_min(1e-12))
    return weight


@dataclass(frozen=True)
class HeadOutput:
    """What every head returns.

    Under a shard (``world_size > 1``) every per-sample field covers the GLOBAL batch ``B_g`` (rank 0's samples
    first) and is identical on every rank, except ``logits`` / ``labels`` / ``class_index``, which describe this
    rank's shard (``labels`` is ``−1`` where the class lives on another rank).

    Attributes:
        loss: scalar batch mean of ``loss_per_sample``: exactly the objective the paper trains.
        loss_per_sample: ``(B,)`` per-sample objective (cross-entropy plus any regulariser / auxiliary term).
        logits: ``(B, C')`` final scaled logits fed to cross-entropy, detached; ``None`` where the method has
            none. ``C' = C`` unless classes were sampled, then column ``k`` is class ``class_index[k]``.
        cos_target: ``(B,)`` detached cosine between each embedding and its own class centre.
        logs: detached scalars for logging (mean margin, mean feature norm, ...).
        cos_hardest_negative: ``(B,)`` detached ``max_{j≠y} cos θ_j`` where the head computed it, else ``None``.
        class_index: the sampled classes (Partial FC), ``None`` when every class was used.
        labels: labels as columns of ``logits``.
    """

    loss: Tensor
    loss_per_sample: Tensor
    logits: Tensor | None
    cos_target: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)
    cos_hardest_negative: Tensor | None = None
    class_index: Tensor | None = None
    labels: Tensor | None = None


@dataclass
class HeadInputs:
    """Quantities every head needs, computed once by :class:`Head` (all in the compute dtype)."""

    embeddings: Tensor  # (B, D) raw
    x_hat: Tensor  # (B, D) unit embeddings, f / ||f|| with the UNCLAMPED norm
    norms: Tensor  # (B,) ||f||
    cos: Tensor  # (B, C') cosines to the (sampled) class centres
    labels: Tensor  # (B,) columns of cos
    cos_target: Tensor  # (B,) cos[i, labels[i]], differentiable
    class_index: Tensor | None
    aux: dict[str, Tensor]
    shard: ShardSpec | None = None  # set only when the centres are sharded over several ranks
    global_labels: Tensor | None = None  # (B_g,) global class ids of the gathered batch, under a shard

    def cross_entropy(
        self, target_logit: Tensor, scale: float | Tensor, clamp_eps: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """:func:`~qualiface.functional.margin_ce.margin_cross_entropy` of these cosines, or its sharded form."""
        if self.shard is None:
            return margin_cross_entropy(self.cos, self.labels, target_logit, scale, clamp_eps=clamp_eps)
        return sharded_margin_cross_entropy(
            self.cos, self.labels, target_logit, scale, group=self.shard.group, clamp_eps=clamp_eps
        )

    def hardest_negative(self) -> Tensor:
        """Detached ``max_{j≠y_i} cos_ij`` ``(B,)`` (``-inf`` with a single class), over all shards.

        One ``amax`` pass; only the rows whose maximum is the target itself are searched again without it.
        """
        if self.shard is not None:
            return self._sharded_hardest_negative()
        cos = self.cos.detach()
        if cos.shape[1] < 2:
            return cos.new_full((cos.shape[0],), -math.inf)
        best = cos.amax(dim=1)
        rows = (best <= self.cos_target.detach()).nonzero().squeeze(1)
        if rows.numel():
            again = cos.index_select(0, rows).scatter_(1, self.labels[rows].unsqueeze(1), -math.inf)
            best = best.index_copy(0, rows, again.amax(dim=1))
        return best

    def _sharded_hardest_negative(self) -> Tensor:
        cos = self.cos.detach()
        best = cos.new_full((cos.shape[0],), -math.inf)
        if cos.shape[1]:
            owned = self.labels >= 0
            column = self.labels.clamp_min(0).unsqueeze(1)
            best = cos.amax(dim=1)
            rows = (owned & (best <= cos.gather(1, column).squeeze(1))).nonzero().squeeze(1)
            if rows.numel():
                again = cos.index_select(0, rows).scatter_(1, column[rows], -math.inf)
                best = best.index_copy(0, rows, again.amax(dim=1))
        assert self.shard is not None
        return all_reduce_max(best, self.shard)


class Head(nn.Module):
    """Base class: validation, float32 compute, class sampling and the cosine matrix.

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``.
        sample_rate: Partial FC rate in ``(0, 1]``: during training only ``int(rate·C)`` class centres are
            used per step, every positive class among them (arcface_torch ``partial_fc_v2``).
        sparse_grad: with sampling, give ``weight`` a sparse gradient (only the sampled rows); use an
            optimizer that accepts sparse gradients.
        matmul_dtype: dtype of the cosine GEMMs (``"bfloat16"`` trades ~3 decimal digits of the cosines
            for speed); everything else stays in float32. ``None``: the compute dtype.
        shard: hold only this rank's block of the class centres (:class:`~qualiface.heads.sharding.ShardSpec`):
            ``weight`` is ``(num_local, D)`` with the global classes ``[class_start, class_start + num_local)``,
            ``num_classes`` stays the global ``C``. The head is then called with the LOCAL batch and GLOBAL
            labels on every rank (same batch size everywhere) and computes the loss of the all-gathered
            batch. With sampling, each rank keeps its local positives plus random local negatives,
            ``int(sample_rate·num_local)`` rows in all. ``None`` (or ``world_size == 1``): every class here.

    Attributes:
        class_start: first global class held here (0 without a shard).
        num_local_classes: rows of ``weight``.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    accepts: ClassVar[frozenset[str]] = frozenset()
    #: The quality its training produces: ``"feature_norm"`` (the embedding norm follows quality: MagFace,
    #: AdaFace), the name of the quality branch whose output it trains (CR-FIQA, ScaleFace), or ``None``.
    trained_quality: ClassVar[str | None] = None
    normalize_eps: ClassVar[float] = 1e-12

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        sample_rate: float = 1.0,
        sparse_grad: bool = False,
        matmul_dtype: str | torch.dtype | None = None,
        shard: ShardSpec | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(f"embedding_dim and num_classes must be positive, got {embedding_dim}, {num_classes}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if shard is not None and num_classes < shard.world_size:
            raise ValueError(
                f"cannot shard {num_classes} classes over {shard.world_size} ranks (fewer classes than ranks)"
            )
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.sparse_grad = sparse_grad
        self.matmul_dtype = getattr(torch, matmul_dtype) if isinstance(matmul_dtype, str) else matmul_dtype
        self.shard = shard
        self.class_start = 0 if shard is None else shard.class_start(num_classes)
        self.num_local_classes = num_classes if shard is None else shard.num_local(num_classes)
        self.weight = nn.Parameter(torch.empty(self.num_local_classes, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the class centres with :meth:`init_centres_`."""
        self.init_centres_(self.weight)

    def init_centres_(self, weight: Tensor) -> None:
        """In place: the method's class-centre initialisation of ``weight (rows, D)``; N(0, 0.01²) as
        arcface_torch Partial FC unless a method overrides. Works on any block of rows, so a trainer can
        initialise a sharded head exactly like the unsharded one."""
        with torch.no_grad():
            nn.init.normal_(weight, std=0.01)

    def extra_repr(self) -> str:
        text = f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, sample_rate={self.sample_rate}"
        if self.shard is not None:
            text += (
                f", shard=(rank {self.shard.rank} of {self.shard.world_size}: classes "
                f"[{self.class_start}, {self.class_start + self.num_local_classes}))"
            )
        return text

    @property
    def sharded(self) -> bool:
        """Whether the class centres are spread over several ranks (collectives in ``forward``)."""
        return self.shard is not None and self.shard.world_size > 1

    def forward(self, embeddings: Tensor, labels: Tensor, **aux: Tensor) -> HeadOutput:
        """Loss and diagnostics for raw ``embeddings (B, D)`` and integer ``labels (B,)``.

        Under a shard: the LOCAL batch, GLOBAL labels; the output covers the all-gathered batch.
        """
        if self.sharded:
            return self._sharded_forward(embeddings, labels, aux)
        self._validate(embeddings, labels, aux)
        dtype = torch.float64 if self.weight.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            inputs = self._prepare(embeddings.to(dtype), labels, {k: v.to(dtype).reshape(-1) for k, v in aux.items()})
            return self.compute(inputs)

    def _sharded_forward(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> HeadOutput:
        shard = self.shard
        assert shard is not None
        name = type(self).__name__
        error: Exception | None = None
        try:
            self._validate(embeddings, labels, aux)
        except (ValueError, TypeError) as exc:
            error = exc
        batch = int(embeddings.shape[0]) if embeddings.dim() else -1
        # every rank learns of any failure before a collective whose shape depends on the batch
        sizes, bad = check_batch_sizes(batch, error is not None, shard, self.weight.device)
        if error is not None:
            raise error
        if bad:
            raise ValueError(f"{name}: rank(s) {bad} received invalid inputs (see the error raised there)")
        if len(set(sizes)) > 1:
            raise ValueError(
                f"{name}: every rank must pass the same local batch size to a sharded head, got local batch "
                f"sizes {sizes} (ranks 0..{shard.world_size - 1}); this is rank {shard.rank} with {batch}"
            )
        dtype = torch.float64 if self.weight.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            inputs = self._prepare_sharded(
                embeddings.to(dtype), labels, {k: v.to(dtype).reshape(-1) for k, v in aux.items()}, shard
            )
            return self.compute(inputs)

    def _prepare_sharded(
        self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor], shard: ShardSpec
    ) -> HeadInputs:
        """Gather the batch, cosines of the global batch against the local shard, replicated target cosine."""
        keys = sorted(aux)  # the same order on every rank
        # ||f|| and the aux inputs are replicated quantities: gathered with a slicing backward (counted once);
        # f itself feeds the shard-partial cosines: gathered with a summing backward (see sharding.py).
        replicated = torch.stack([torch.linalg.vector_norm(embeddings, dim=1), *(aux[k] for k in keys)], dim=1)
        emb_g, replicated_g = gather_batch(embeddings, replicated, shard)
        labels_g = all_gather_labels(labels, shard)
        x_hat, _ = l2_normalize(emb_g, self.normalize_eps)
        norms = replicated_g[:, 0]
        aux_g = {k: replicated_g[:, 1 + i] for i, k in enumerate(keys)}

        local = labels_g - self.class_start
        owned = (local >= 0) & (local < self.num_local_classes)
        index = None
        columns = torch.where(owned, local, -1)
        if self.training and self.sample_rate < 1.0:
            index, _ = sample_classes(local[owned], self.num_local_classes, self.sample_rate)
            columns = torch.full_like(local, -1)
            columns[owned] = torch.searchsorted(index, local[owned])
        weight = self.weight if self.weight.dtype == embeddings.dtype else self.weight.to(embeddings.dtype)
        if index is not None and index.numel() == 0:  # no local class sampled: keep x_hat in the graph
            cos = x_hat.new_zeros((x_hat.shape[0], 0))
            cos_target_local = x_hat[:, 0] * 0.0
        else:
            cos, cos_target_local = self._cosines(x_hat, weight, index, columns.clamp_min(0))
            cos_target_local = torch.where(owned, cos_target_local, 0.0)
        cos_target = sum_partial(cos_target_local, shard)  # the owner's value, replicated
        return HeadInputs(emb_g, x_hat, norms, cos, columns, cos_target, index, aux_g, shard, labels_g)

    @abstractmethod
    def compute(self, inputs: HeadInputs) -> HeadOutput:
        """The method's objective from the prepared inputs."""

    def _cosines(self, x_hat: Tensor, weight: Tensor, index: Tensor | None, columns: Tensor) -> tuple[Tensor, Tensor]:
        """:func:`cosine_matrix` with this head's options: ``(cos, cos[i, columns[i]])``."""
        return cosine_matrix(
            x_hat,
            weight,
            index,
            sparse_grad=self.sparse_grad,
            matmul_dtype=self.matmul_dtype,
            eps=self.normalize_eps,
            labels=columns,
        )

    def _prepare(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> HeadInputs:
        weight = self.weight if self.weight.dtype == embeddings.dtype else self.weight.to(embeddings.dtype)
        x_hat, norms = l2_normalize(embeddings, self.normalize_eps)
        index, columns = None, labels
        if self.training and self.sample_rate < 1.0:
            index, columns = sample_classes(labels, self.num_classes, self.sample_rate)
        cos, cos_target = self._cosines(x_hat, weight, index, columns)
        return HeadInputs(embeddings, x_hat, norms, cos, columns, cos_target, index, aux)

    def _validate(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> None:
        name = type(self).__name__
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"{name}: embeddings must have shape (B, {self.embedding_dim}), got {tuple(embeddings.shape)}"
            )
        if not embeddings.is_floating_point():
            raise TypeError(f"{name}: embeddings must be floating point, got {embeddings.dtype}")
        batch = embeddings.shape[0]
        if batch == 0:
            raise ValueError(f"{name}: empty batch")
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name}: labels must be an integer tensor, got {labels.dtype}")
        if labels.shape != (batch,):
            raise ValueError(f"{name}: labels must have shape ({batch},), got {tuple(labels.shape)}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name}: label {bad} is outside [0, {self.num_classes})")
        if not torch.isfinite(embeddings).all():
            raise ValueError(f"{name}: embeddings contain NaN or Inf")
        missing = self.requires - aux.keys()
        if missing:
            raise ValueError(f"{name} needs the auxiliary input(s) {sorted(missing)} (e.g. head(emb, labels, ...=t))")
        unknown = aux.keys() - self.requires - self.accepts
        if unknown:
            raise ValueError(f"{name} does not take the auxiliary input(s) {sorted(unknown)}")
        for key, value in aux.items():
            if value.numel() != batch or value.shape[0] != batch:
                raise ValueError(f"{name}: {key} must have shape ({batch},) or ({batch}, 1), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: {key} contains NaN or Inf")

    def base_logs(self, inputs: HeadInputs) -> dict[str, Tensor]:
        """Detached diagnostics shared by every head."""
        cos_t = inputs.cos_target.detach()
        return {
            "feat/norm_mean": inputs.norms.detach().mean(),
            "head/cos_target_mean": cos_t.mean(),
            "head/theta_target_deg": torch.rad2deg(torch.acos(cos_t.clamp(-1.0, 1.0))).mean(),
        }


class MarginSoftmaxHead(Head):
    """A head whose objective is softmax cross-entropy with a margined target logit, plus an optional
    per-sample regulariser. Subclasses implement :meth:`target_logit`.
    """

    def target_logit(self, inputs: HeadInputs) -> tuple[Tensor, float | Tensor, Tensor | None, dict[str, Tensor]]:
        """``(t (B,), s (float or (B,)), extra per-sample loss (B,) or None, logs)`` for this method."""
        raise NotImplementedError

    def compute(self, inputs: HeadInputs) -> HeadOutput:
        target, scale, extra, logs = self.target_logit(inputs)
        ce, logits = inputs.cross_entropy(target, scale)
        loss_per_sample = ce if extra is None else ce + extra
        all_logs = self.base_logs(inputs)
        all_logs["loss/ce"] = ce.detach().mean()
        all_logs.update({k: v.detach() for k, v in logs.items()})
        return HeadOutput(
            loss=loss_per_sample.mean(),
            loss_per_sample=loss_per_sample,
            logits=logits,
            cos_target=inputs.cos_target.detach(),
            logs=all_logs,
            class_index=inputs.class_index,
            labels=inputs.labels,
        )
