"""AdaFace: quality-adaptive margin from feature norms (Kim et al., CVPR 2022; code ``mk-minchul/AdaFace``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from qualiface.heads.base import Head, HeadInputs, MarginTerms, uniform_unit_rows_
from qualiface.registry import HEADS


@HEADS.register("adaface")
class AdaFace(Head):
    """AdaFace loss: a margin that moves between ArcFace and CosFace with the normalised feature norm.

    As ``head.py: AdaFace.forward``, with ``c_ij = clamp(cos θ_ij, −1 + ε, 1 − ε)`` (the whole matrix)::

        â     = sg(clip(||f||, 0.001, 100))
        μ ← α·mean(â) + (1 − α)·μ,   σ ← α·std(â) + (1 − α)·σ      (training only, before use)
        ẑ     = clip(h·(â − μ)/(σ + ε), −1, 1)
        g_angle = −m·ẑ,   g_add = m + m·ẑ
        θ'_y  = clip(arccos(c_iy) + g_angle, ε, π − ε)
        z_iy  = s·(cos θ'_y − g_add),   z_ij = s·c_ij (j ≠ y)
        L_i   = CE_i(z)

    ẑ = −1 (low norm) gives ArcFace(m), ẑ = 0 CosFace(m), ẑ = +1 ``cos(θ − m) − 2m``. No gradient flows into
    ``â``, ``μ``, ``σ`` or the margins. ``std`` is the unbiased estimator.

    Defaults are the training scripts' values (``scripts/run_ir101_ms1mv2.sh``): ``m = 0.4``, ``h = 0.333``,
    ``s = 64``, ``t_alpha = 0.01``, ``ε = 1e-3``, ``μ₀ = 20``, ``σ₀ = 100``. Beware: the official class
    default is ``t_alpha = 1.0`` (no smoothing) and ``config.py`` has ``m = 0.5``, ``h = 0``.

    Differences from the official code, all documented choices:

    * The EMA is updated only in training mode (the official head updates on every call, but it is only
      called while training).
    * With a batch of one sample the unbiased std is undefined (the official code turns ``σ`` into NaN and
      every later loss with it); here ``σ`` is then left unchanged and only ``μ`` is updated.
    * Under DDP the official EMA uses each rank's local batch (and DDP broadcasts rank 0's buffers). Set
      :attr:`reduce_statistics` to sum the local moments over ranks, e.g.
      ``head.reduce_statistics = lambda t: (dist.all_reduce(t), t)[1]``; the EMA then uses the global
      batch's mean and unbiased std, identical on every rank. :meth:`update_statistics` is the EMA step
      itself, for trainers that compute the statistics elsewhere. With sharded class centres
      (``shard=ShardSpec(...)``, ``world_size > 1``) the head already sees the all-gathered norms, so the EMA
      uses the global batch statistics on every rank automatically and :attr:`reduce_statistics` is ignored.

    Class centres are initialised uniform(−1, 1), then each row rescaled to unit L2 norm (official).
    The buffers ``batch_mean`` and ``batch_std`` (shape ``(1,)``, as the official checkpoints) are saved
    in the ``state_dict``.

    Args:
        scale: ``s``.
        margin: ``m`` in radians.
        h: concentration ``h`` of the normalised norm.
        t_alpha: EMA momentum ``α`` (weight of the current batch).
        eps: ``ε``, the cosine / angle clamp and the ``σ`` guard.
        norm_min: lower clip of the norm.
        norm_max: upper clip of the norm.
        init_mean: initial ``μ``.
        init_std: initial ``σ``.
    """

    trained_quality: ClassVar[str | None] = "feature_norm"

    batch_mean: Tensor
    batch_std: Tensor

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        eps: float = 1e-3,
        norm_min: float = 1e-3,
        norm_max: float = 100.0,
        init_mean: float = 20.0,
        init_std: float = 100.0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= t_alpha <= 1.0:
            raise ValueError(f"t_alpha must be in [0, 1], got {t_alpha}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if not 0.0 <= norm_min < norm_max:
            raise ValueError(f"need 0 <= norm_min < norm_max, got {norm_min}, {norm_max}")
        if scale <= 0.0:
            raise ValueError(f"scale must be positive, got {scale}")
        super().__init__(embedding_dim, num_classes, **kwargs)
        self.scale = scale
        self.margin = margin
        self.h = h
        self.t_alpha = t_alpha
        self.eps = eps
        self.norm_min = norm_min
        self.norm_max = norm_max
        self.register_buffer("batch_mean", torch.full((1,), float(init_mean)))
        self.register_buffer("batch_std", torch.full((1,), float(init_std)))
        self.reduce_statistics: Callable[[Tensor], Tensor] | None = None

    def init_centres_(self, weight: Tensor) -> None:
        """uniform(−1, 1), then every class centre rescaled to unit L2 norm (official ``kernel``)."""
        uniform_unit_rows_(weight)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, scale={self.scale}, margin={self.margin}, h={self.h}, "
            f"t_alpha={self.t_alpha}, eps={self.eps}"
        )

    @torch.no_grad()
    def update_statistics(self, mean: Tensor, std: Tensor | None) -> None:
        """One EMA step ``μ ← α·mean + (1 − α)·μ``, ``σ ← α·std + (1 − α)·σ``; ``std=None`` keeps ``σ``. A
        non-finite statistic (a diverged step) leaves its average as it was, without reading it on the host."""
        alpha = self.t_alpha
        for average, value in ((self.batch_mean, mean), (self.batch_std, std)):
            if value is not None:
                updated = value.to(average.dtype) * alpha + (1.0 - alpha) * average
                average.copy_(torch.where(torch.isfinite(updated), updated, average))

    @torch.no_grad()
    def _batch_statistics(self, a_hat: Tensor, global_batch: bool = False) -> tuple[Tensor, Tensor | None]:
        """Mean and unbiased std of the (global, with :attr:`reduce_statistics`) batch of clipped norms.

        ``global_batch``: ``a_hat`` already holds the all-gathered batch (sharded head), no reduction.
        """
        if self.reduce_statistics is None or global_batch:
            std = a_hat.std() if a_hat.numel() > 1 else None
            return a_hat.mean(), std
        a64 = a_hat.double()
        moments = torch.stack([a64.new_tensor(float(a64.numel())), a64.sum(), a64.square().sum()])
        n, total, total_sq = self.reduce_statistics(moments).unbind()
        mean = total / n
        std = ((total_sq - total * mean) / (n - 1)).clamp_min(0.0).sqrt() if n > 1 else None
        return mean, std

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        cos_y = inputs.cos_target.clamp(-1.0 + self.eps, 1.0 - self.eps)
        a_hat = inputs.norms.detach().clip(self.norm_min, self.norm_max)
        if self.training:
            self.update_statistics(*self._batch_statistics(a_hat, global_batch=inputs.shard.distributed))
        mu = self.batch_mean.to(cos_y.dtype)
        sigma = self.batch_std.to(cos_y.dtype)
        z = (self.h * (a_hat - mu) / (sigma + self.eps)).clip(-1.0, 1.0)
        g_angle = -self.margin * z
        g_add = self.margin + self.margin * z
        theta = torch.acos(cos_y).add(g_angle).clip(self.eps, math.pi - self.eps)
        target = self.scale * (torch.cos(theta) - g_add)
        logs = {
            "head/margin_mean": g_add.mean(),
            "adaface/g_angle_mean": g_angle.mean(),
            "adaface/z_mean": z.mean(),
            "adaface/norm_mean_ema": self.batch_mean.detach().squeeze(0).clone(),
            "adaface/norm_std_ema": self.batch_std.detach().squeeze(0).clone(),
        }
        return MarginTerms(target, self.scale, logs=logs, clamp_eps=self.eps)
