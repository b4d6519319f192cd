"""The one contract every margin head follows.

A head owns its class centres ``weight (num_classes, embedding_dim)`` and is called as
``head(embeddings, labels, **aux)`` with RAW embeddings. It validates its inputs, computes in float32 (or
float64 when the head itself is float64) even under autocast, and returns a :class:`HeadOutput`.

Every head is a margin-softmax head: a method implements one hook, :meth:`Head.margin_terms`, that turns the
prepared inputs (:class:`HeadInputs`: unit embeddings, norms, cosines, the target cosine, auxiliary inputs)
into a typed :class:`MarginTerms` (target logit, scale, extra per-sample loss, logs, clamp, hardest
negative). The preparation, the fused cross-entropy and the :class:`HeadOutput` are written once here.

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
from qualiface.functional.margin_ce import margin_cross_entropy
from qualiface.heads.sharding import (
    SINGLE_PROCESS,
    ShardSpec,
    all_reduce_max,
    check_batch_sizes,
    gather_head_inputs,
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


@dataclass(frozen=True)
class MarginTerms:
    """What a head's :meth:`Head.margin_terms` returns: the pieces of its objective for one batch.

    The head's per-sample loss is ``ce_weight·CE_i + extra_loss_i`` with
    ``CE_i = logsumexp_j z_ij − t_i``, ``z_ij = s_i·cos θ_ij`` (``j ≠ y_i``), ``z_iy = t_i``.

    Attributes:
        target_logit: ``t_i`` ``(B,)``, the scaled, margined target logit.
        scale: ``s``, a float or a per-sample tensor ``(B,)`` (its gradient is supported).
        extra_loss: per-sample term added to the cross-entropy ``(B,)`` (a regulariser, an auxiliary loss),
            or ``None``.
        ce_weight: weight of the cross-entropy; ``0`` leaves it out of the loss (it is still logged).
        logs: scalars for logging (detached by the head).
        clamp_eps: clamp the non-target cosines to ``[−1 + eps, 1 − eps]`` before scaling (AdaFace), or ``None``.
        cos_hardest_negative: ``(B,)`` detached ``max_{j≠y} cos θ_j`` when the method computed it.
        ce_log: the log key of the batch-mean cross-entropy.
    """

    target_logit: Tensor
    scale: float | Tensor
    extra_loss: Tensor | None = None
    ce_weight: float = 1.0
    logs: dict[str, Tensor] = field(default_factory=dict)
    clamp_eps: float | None = None
    cos_hardest_negative: Tensor | None = None
    ce_log: str = "loss/ce"


@dataclass
class HeadInputs:
    """Quantities every head needs, computed once by :class:`Head` (all in the compute dtype).

    Under a distributed shard every per-sample field covers the all-gathered batch; ``cos`` holds this rank's
    (sampled) classes, ``labels`` is ``−1`` where the class lives on another rank and ``owned`` says where it
    is here. In one process ``owned`` is ``None``: every class is here.
    """

    embeddings: Tensor  # (B, D) raw
    x_hat: Tensor  # (B, D) unit embeddings, f / ||f|| with the UNCLAMPED norm
    norms: Tensor  # (B,) ||f||
    cos: Tensor  # (B, C') cosines to the (sampled) class centres
    labels: Tensor  # (B,) columns of cos (-1: on another rank)
    cos_target: Tensor  # (B,) cos[i, y_i], differentiable, replicated
    class_index: Tensor | None
    aux: dict[str, Tensor]
    shard: ShardSpec = SINGLE_PROCESS
    owned: Tensor | None = None  # (B,) bool under a distributed shard, else None

    def cross_entropy(
        self, target_logit: Tensor, scale: float | Tensor, clamp_eps: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """:func:`~qualiface.functional.margin_ce.margin_cross_entropy` of these cosines (over every shard)."""
        return margin_cross_entropy(
            self.cos, self.labels, target_logit, scale, clamp_eps=clamp_eps, owned=self.owned, group=self.shard.group
        )

    def hardest_negative(self) -> Tensor:
        """Detached ``max_{j≠y_i} cos_ij`` ``(B,)`` (``-inf`` with a single class), over all shards.

        One ``topk(2)`` pass and no host synchronisation: the largest cosine unless it is the target's own
        column, then the second largest.
        """
        cos = self.cos.detach()
        batch, width = cos.shape
        if width == 0:
            best = cos.new_full((batch,), -math.inf)
        else:
            values, columns = cos.topk(min(2, width), dim=1)
            first_is_target = columns[:, 0] == self.labels  # never on a row whose class is elsewhere (label -1)
            second = values[:, 1] if width > 1 else cos.new_full((batch,), -math.inf)
            best = torch.where(first_is_target, second, values[:, 0])
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
            ``int(sample_rate·num_local)`` rows in all. ``None`` (or ``world_size == 1``): every class here
            (:data:`~qualiface.heads.sharding.SINGLE_PROCESS`, no collective).
        validate_inputs: check the values at every call: the label range, finiteness, method-specific
            constraints (:meth:`validate_aux`) and, under a distributed shard, that every rank's inputs are
            valid and of one batch size. These read tensors on the host (a few synchronisations per step on a
            GPU, see ``bench/syncs.py``). Shapes, dtypes and auxiliary input names are always checked. The
            trainer turns it off: it checks labels where they are read and stops on a non-finite loss.

    Attributes:
        class_start: first global class held here (0 without a shard).
        num_local_classes: rows of ``weight``.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    accepts: ClassVar[frozenset[str]] = frozenset()
    #: The quality its training produces: ``"feature_norm"`` (the embedding norm follows quality: MagFace,
    #: AdaFace), the name of the quality branch whose output it trains (CR-FIQA, ScaleFace), or ``None``.
    trained_quality: ClassVar[str | None] = None
    #: The state entries with one row per class of this process's block (``weight`` and any per-class buffer):
    #: a checkpoint written by one number of processes is split along these rows to resume on another.
    class_rows: ClassVar[frozenset[str]] = frozenset({"weight"})
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
        validate_inputs: bool = True,
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
        self.shard: ShardSpec = SINGLE_PROCESS if shard is None else shard
        self.validate_inputs = validate_inputs
        self.class_start = self.shard.class_start(num_classes)
        self.num_local_classes = self.shard.num_local(num_classes)
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
        if self.sharded:
            text += (
                f", shard=(rank {self.shard.rank} of {self.shard.world_size}: classes "
                f"[{self.class_start}, {self.class_start + self.num_local_classes}))"
            )
        return text

    @property
    def sharded(self) -> bool:
        """Whether the class centres are spread over several ranks (collectives in ``forward``)."""
        return self.shard.distributed

    def forward(self, embeddings: Tensor, labels: Tensor, **aux: Tensor) -> HeadOutput:
        """Loss and diagnostics for raw ``embeddings (B, D)`` and integer ``labels (B,)``.

        Under a distributed shard: the LOCAL batch, GLOBAL labels; the output covers the all-gathered batch.
        """
        self._check_inputs(embeddings, labels, aux)
        dtype = torch.float64 if self.weight.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            inputs = self._prepare(embeddings.to(dtype), labels, {k: v.to(dtype).reshape(-1) for k, v in aux.items()})
            return self._output(inputs, self.margin_terms(inputs))

    @abstractmethod
    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        """The method's target logit, scale and extra loss from the prepared inputs."""

    def _prepare(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> HeadInputs:
        """Gather the batch over the shard, cosines against this process's (sampled) classes, the target cosine
        taken on the owner of each class and replicated (see :mod:`qualiface.heads.sharding`)."""
        shard = self.shard
        batch = gather_head_inputs(embeddings, labels, aux, shard, self.normalize_eps)
        local = batch.labels - self.class_start
        owned = (local >= 0) & (local < self.num_local_classes) if shard.distributed else None
        index, columns = None, local if owned is None else torch.where(owned, local, -1)
        if self.training and self.sample_rate < 1.0:
            index, columns = sample_classes(local, self.num_local_classes, self.sample_rate, owned)
        x_hat = batch.x_hat
        weight = self.weight if self.weight.dtype == x_hat.dtype else self.weight.to(x_hat.dtype)
        if index is not None and index.numel() == 0:  # no local class sampled: keep x_hat in the graph
            cos = x_hat.new_zeros((x_hat.shape[0], 0))
            cos_target = x_hat[:, 0] * 0.0
        else:
            cos, cos_target = self._cosines(x_hat, weight, index, columns if owned is None else columns.clamp_min(0))
            if owned is not None:
                cos_target = torch.where(owned, cos_target, 0.0)
        cos_target = sum_partial(cos_target, shard)  # the owner's value, replicated
        return HeadInputs(
            embeddings=batch.embeddings,
            x_hat=x_hat,
            norms=batch.norms,
            cos=cos,
            labels=columns,
            cos_target=cos_target,
            class_index=index,
            aux=batch.aux,
            shard=shard,
            owned=owned,
        )

    def _output(self, inputs: HeadInputs, terms: MarginTerms) -> HeadOutput:
        """The one place a :class:`HeadOutput` is built: cross-entropy, the extra loss, the logs."""
        ce, logits = inputs.cross_entropy(terms.target_logit, terms.scale, terms.clamp_eps)
        if terms.ce_weight == 0.0:
            if terms.extra_loss is None:
                raise ValueError(f"{type(self).__name__}: a loss needs a cross-entropy weight or an extra term")
            loss_per_sample = terms.extra_loss
        else:
            loss_per_sample = ce if terms.ce_weight == 1.0 else terms.ce_weight * ce
            if terms.extra_loss is not None:
                loss_per_sample = loss_per_sample + terms.extra_loss
        logs = self.base_logs(inputs)
        logs[terms.ce_log] = ce.detach().mean()
        logs.update({k: v.detach() for k, v in terms.logs.items()})
        return HeadOutput(
            loss=loss_per_sample.mean(),
            loss_per_sample=loss_per_sample,
            logits=logits,
            cos_target=inputs.cos_target.detach(),
            logs=logs,
            cos_hardest_negative=terms.cos_hardest_negative,
            class_index=inputs.class_index,
            labels=inputs.labels,
        )

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

    def _check_inputs(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> None:
        """:meth:`_validate` here; under a distributed shard every rank also learns of a failure on another
        rank, and of unequal batch sizes, before any collective whose shape depends on the batch (with
        :attr:`validate_inputs` only: the exchange is a collective and a host synchronisation)."""
        shard = self.shard
        if not (shard.distributed and self.validate_inputs):
            self._validate(embeddings, labels, aux)
            return
        name = type(self).__name__
        error: Exception | None = None
        try:
            self._validate(embeddings, labels, aux)
        except (ValueError, TypeError) as exc:
            error = exc
        batch = int(embeddings.shape[0]) if embeddings.dim() else -1
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

    def validate_aux(self, aux: dict[str, Tensor]) -> None:
        """Method-specific checks of the auxiliary inputs (shape and finiteness are already checked)."""

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
        missing = self.requires - aux.keys()
        if missing:
            raise ValueError(f"{name} needs the auxiliary input(s) {sorted(missing)} (e.g. head(emb, labels, ...=t))")
        unknown = aux.keys() - self.requires - self.accepts
        if unknown:
            raise ValueError(f"{name} does not take the auxiliary input(s) {sorted(unknown)}")
        for key, value in aux.items():
            if value.numel() != batch or value.shape[0] != batch:
                raise ValueError(f"{name}: {key} must have shape ({batch},) or ({batch}, 1), got {tuple(value.shape)}")
        if self.validate_inputs:  # the value checks read tensors on the host
            self._check_values(embeddings, labels, aux)

    def input_problem(self, embeddings: Tensor, labels: Tensor, **aux: Tensor) -> str | None:
        """What is wrong with the values of these inputs (the checks of ``validate_inputs``), or ``None``.

        For a caller that runs without the per-step checks and wants to say why a step failed (the trainer
        after a non-finite loss)."""
        try:
            self._check_values(embeddings, labels, {k: v.reshape(-1) for k, v in aux.items()})
        except ValueError as exc:
            return str(exc)
        return None

    def _check_values(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> None:
        name = type(self).__name__
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name}: label {bad} is outside [0, {self.num_classes})")
        if not torch.isfinite(embeddings).all():
            raise ValueError(f"{name}: embeddings contain NaN or Inf")
        for key, value in aux.items():
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: {key} contains NaN or Inf")
        self.validate_aux(aux)

    def base_logs(self, inputs: HeadInputs) -> dict[str, Tensor]:
        """Detached diagnostics shared by every head."""
        cos_t = inputs.cos_target.detach()
        return {
            "feat/norm_mean": inputs.norms.detach().mean(),
            "head/cos_target_mean": cos_t.mean(),
            "head/theta_target_deg": torch.rad2deg(torch.acos(cos_t.clamp(-1.0, 1.0))).mean(),
        }
