"""CR-FIQA: certainty-ratio face image quality (Boutros et al., CVPR 2023; code ``fdbtrs/CR-FIQA``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from qualiface.functional.margins import ArcFallback, ArcGrad
from qualiface.heads.arcface import ArcFace
from qualiface.heads.base import HeadInputs, MarginTerms
from qualiface.registry import HEADS

CRTarget = Literal["paper", "code"]


@HEADS.register("cr_fiqa")
class CRFIQA(ArcFace):
    """ArcFace plus a regression of the backbone's quality output onto the certainty ratio.

    ``L = CE(ArcFace logits) + α · mean_i SmoothL1_β(q_i, CR_i)``, per sample
    ``loss_i = CE_i + α · SmoothL1_β(q_i, CR_i)``, with

    - ``CCS_i = cos θ_{i,y_i}`` (before the margin, detached);
    - ``NNCCS_i = max_{j≠y_i} cos θ_ij`` (detached), the paper's nearest negative class centre. The official
      code writes ``−1e-12`` into the target column before the max, i.e. ``max(max_{j≠y_i} cos θ_ij, −1e-12)``;
      ``nnccs_floor="auto"`` (default) uses that floor only with ``cr_target="code"``;
    - ``cr_target="paper"`` (default, the published Eq.): ``CR_i = CCS_i / (NNCCS_i + 1 + ε)``;
      ``cr_target="code"`` (``train_cr_fiqa.py``): ``CR_i = CCS_i / NNCCS_i``. Warning: the code form explodes
      when every negative cosine of a sample is ``<= 0`` (``NNCCS = −1e-12`` gives ``CR ≈ −1e12·CCS``),
      which is rare with ~10⁴ classes but certain with a handful.

    ``q`` is the backbone's regression output, passed as ``head(emb, labels, quality=q)``; the gradient of the
    regression term reaches the backbone only through ``q`` (``CCS`` and ``NNCCS`` are constants).

    The ArcFace part is the analytic ``cos(θ_y + m)`` with its exact gradient, no easy margin, and no
    ``θ + m > π`` handling (``fallback="none"``): the CR-FIQA paper writes plain ArcFace and its code
    (``losses.py: CR_FIQA_LOSS``) applies ``cos(arccos(c) + m)`` without a fallback, so paper and code agree.
    ``fallback="threshold"`` gives the original ArcFace code's fallback. Class centres ~ N(0, 0.01²).
    With class sampling (``sample_rate < 1``) ``NNCCS`` is the maximum over the sampled negatives; with sharded
    centres it is the maximum over every shard (all-reduced).

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``.
        scale: ``s = 64``.
        margin: ``m = 0.5`` (radians).
        alpha: ``α = 10``, weight of the regression term.
        beta: ``β = 0.5``, SmoothL1 transition point.
        cr_target: ``"paper"`` (default) or ``"code"``, see above.
        cr_eps: ``ε = 1e-9`` of the paper form (the paper's value is unverified).
        nnccs_floor: lower bound of ``NNCCS``: a float, ``None`` (the paper's plain maximum) or ``"auto"``
            (``None`` with the paper target, ``-1e-12`` with the code target, reproducing each source).
        grad: ArcFace gradient, ``"exact"`` (default, as CR-FIQA) or ``"insightface"`` (straight-through).
        easy_margin: apply the margin only where ``cos θ_y > 0`` (off, as CR-FIQA).
        fallback: ``"none"`` (default, CR-FIQA) or ``"threshold"``.
        eps: ``arccos`` clamp.
        **kwargs: :class:`~qualiface.heads.base.Head` options (``sample_rate``, ...).

    Logs: ``crfiqa/cr_mean``, ``crfiqa/quality_mean``, ``crfiqa/regression_loss`` (mean SmoothL1, before ``α``),
    ``loss/ce`` and the shared head logs.
    """

    trained_quality: ClassVar[str | None] = "cr_fiqa"

    requires = frozenset({"quality"})

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.5,
        alpha: float = 10.0,
        beta: float = 0.5,
        cr_target: CRTarget = "paper",
        cr_eps: float = 1e-9,
        nnccs_floor: float | Literal["auto"] | None = "auto",
        grad: ArcGrad = "exact",
        easy_margin: bool = False,
        fallback: ArcFallback = "none",
        eps: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            embedding_dim,
            num_classes,
            scale=scale,
            margin=margin,
            grad=grad,
            easy_margin=easy_margin,
            fallback=fallback,
            eps=eps,
            **kwargs,
        )
        if cr_target not in ("paper", "code"):
            raise ValueError(f"cr_target must be 'paper' or 'code', got {cr_target!r}")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.alpha = alpha
        self.beta = beta
        self.cr_target: CRTarget = cr_target
        self.cr_eps = cr_eps
        self.nnccs_floor = nnccs_floor

    def certainty_ratio(self, ccs: Tensor, nnccs: Tensor) -> Tensor:
        """The regression target ``CR`` from detached ``CCS`` and ``NNCCS`` (both ``(B,)``)."""
        if self.cr_target == "code":
            return ccs / nnccs
        return ccs / (nnccs + 1.0 + self.cr_eps)

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        arcface = super().margin_terms(inputs)
        hardest = inputs.hardest_negative()
        floor = self.nnccs_floor
        if floor == "auto":
            floor = -1e-12 if self.cr_target == "code" else None
        nnccs = hardest if floor is None else hardest.clamp_min(float(floor))
        cr = self.certainty_ratio(inputs.cos_target.detach(), nnccs)
        quality = inputs.aux["quality"]
        regression = F.smooth_l1_loss(quality, cr, beta=self.beta, reduction="none")
        logs = {
            **arcface.logs,
            "crfiqa/cr_mean": cr.mean(),
            "crfiqa/quality_mean": quality.detach().mean(),
            "crfiqa/regression_loss": regression.detach().mean(),
        }
        return replace(arcface, extra_loss=self.alpha * regression, logs=logs, cos_hardest_negative=hardest)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, beta={self.beta}, cr_target={self.cr_target!r}"


__all__ = ["CRFIQA"]
