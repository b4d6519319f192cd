"""The one contract every margin head follows.

A head owns its class centres ``weight (num_classes, embedding_dim)`` and is called as
``head(embeddings, labels, **aux)`` with RAW embeddings. It validates its inputs, computes in float32 (or
float64 when the head itself is float64) even under autocast, and returns a :class:`HeadOutput`.
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
from qualiface.functional.margins import l2_normalize


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

    def hardest_negative(self) -> Tensor:
        """Detached ``max_{j≠y_i} cos_ij`` ``(B,)`` (``-inf`` with a single class).

        One ``amax`` pass; only the rows whose maximum is the target itself are searched again without it.
        """
        cos = self.cos.detach()
        if cos.shape[1] < 2:
            return cos.new_full((cos.shape[0],), -math.inf)
        best = cos.amax(dim=1)
        rows = (best <= self.cos_target.detach()).nonzero().squeeze(1)
        if rows.numel():
            again = cos.index_select(0, rows).scatter_(1, self.labels[rows].unsqueeze(1), -math.inf)
            best = best.index_copy(0, rows, again.amax(dim=1))
        return best


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
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    accepts: ClassVar[frozenset[str]] = frozenset()
    normalize_eps: ClassVar[float] = 1e-12

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        sample_rate: float = 1.0,
        sparse_grad: bool = False,
        matmul_dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(f"embedding_dim and num_classes must be positive, got {embedding_dim}, {num_classes}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.sparse_grad = sparse_grad
        self.matmul_dtype = getattr(torch, matmul_dtype) if isinstance(matmul_dtype, str) else matmul_dtype
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class-centre initialisation; N(0, 0.01²) as arcface_torch Partial FC unless a method overrides."""
        nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, sample_rate={self.sample_rate}"

    def forward(self, embeddings: Tensor, labels: Tensor, **aux: Tensor) -> HeadOutput:
        """Loss and diagnostics for raw ``embeddings (B, D)`` and integer ``labels (B,)``."""
        self._validate(embeddings, labels, aux)
        dtype = torch.float64 if self.weight.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            inputs = self._prepare(embeddings.to(dtype), labels, {k: v.to(dtype).reshape(-1) for k, v in aux.items()})
            return self.compute(inputs)

    @abstractmethod
    def compute(self, inputs: HeadInputs) -> HeadOutput:
        """The method's objective from the prepared inputs."""

    def _prepare(self, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor]) -> HeadInputs:
        weight = self.weight if self.weight.dtype == embeddings.dtype else self.weight.to(embeddings.dtype)
        x_hat, norms = l2_normalize(embeddings, self.normalize_eps)
        index, columns = None, labels
        if self.training and self.sample_rate < 1.0:
            index, columns = sample_classes(labels, self.num_classes, self.sample_rate)
        cos, cos_target = cosine_matrix(
            x_hat,
            weight,
            index,
            sparse_grad=self.sparse_grad,
            matmul_dtype=self.matmul_dtype,
            eps=self.normalize_eps,
            labels=columns,
        )
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
        ce, logits = margin_cross_entropy(inputs.cos, inputs.labels, target, scale)
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
