"""MagFace: magnitude-aware margin and regulariser (Meng et al., CVPR 2021; code ``IrvingMeng/MagFace``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from qualiface.functional.margins import ArcFallback, additive_angular_target, additive_cosine_target
from qualiface.heads.base import Head, HeadInputs, MarginTerms, uniform_unit_rows_
from qualiface.registry import HEADS

MagKind = Literal["arc", "cos"]

# Per-kind defaults that differ: (l_m, lambda_g). ``run/run.sh`` (arc) and ``run/run_dist_cos.sh`` (cos).
_KIND_DEFAULTS: dict[str, tuple[float, float]] = {"arc": (0.45, 35.0), "cos": (0.35, 150.0)}


@HEADS.register("magface")
class MagFace(Head):
    """MagFace loss ``L_i = CE_i + λ_g·g(a_i)`` with a magnitude-dependent angular margin.

    With ``a = clamp(||f||, l_a, u_a)`` (the clamped norm feeds only the margin and the regulariser; the
    cosines use ``x̂ = f/||f||`` with the unclamped norm)::

        m(a)  = (u_m − l_m)/(u_a − l_a)·(a − l_a) + l_m          (linear, increasing, NOT detached)
        t_y   = s·cos(θ_y + m(a))     kind="arc" (MagFace)
        t_y   = s·(cos θ_y − m(a))    kind="cos" (Mag-CosFace, ``run/run_dist_cos.sh``)
        g(a)  = a/u_a² + 1/a
        L_i   = −log( e^{t_y} / (e^{t_y} + Σ_{j≠y} e^{s cos θ_j}) ) + λ_g·g(a_i)

    Outside ``[l_a, u_a]`` the clamp zeroes the gradient of the magnitude from both ``m(a)`` and ``g(a)``.
    Easy margin (official default, never overridden by the trainers): where ``cos θ_y <= 0`` the target
    keeps ``cos θ_y`` (no margin); with ``easy_margin=False`` the ArcFace threshold fallback is used.

    Defaults are the official ``run/run.sh`` values (the released R100 model, issue #28):
    ``l_a = 10``, ``u_a = 110``, ``l_m = 0.45``, ``u_m = 0.8``, ``λ_g = 35``, ``s = 64``, easy margin.
    ``kind="cos"`` defaults to ``l_m = 0.35``, ``λ_g = 150`` (Mag-CosFace script). The argparse default
    ``λ_g = 20`` of ``run/trainer.py`` lies below the convexity bound :attr:`feasibility_bound`
    (22.59 for these values); it is not the default here. Fine-tuning an ArcFace model with magnitudes
    near 1 (README): ``l_a=1, u_a=51, l_m=0.45, u_m=1, lambda_g=5``.

    Class centres are initialised uniform(−1, 1), then each row rescaled to unit L2 norm (official).

    Args:
        scale: ``s``.
        l_a: lower magnitude bound.
        u_a: upper magnitude bound.
        l_m: margin at ``a = l_a`` (``None``: 0.45 for ``"arc"``, 0.35 for ``"cos"``).
        u_m: margin at ``a = u_a``.
        lambda_g: regulariser weight ``λ_g`` (``None``: 35 for ``"arc"``, 150 for ``"cos"``).
        kind: ``"arc"`` (additive angular margin) or ``"cos"`` (additive cosine margin).
        easy_margin: ``"arc"`` only: apply the margin only where ``cos θ_y > 0``.
        eps: ``arccos`` clamp of the target cosine (the official code clamps to ``[−1, 1]``; both agree
            for ``|cos θ_y| < 1 − eps``).
    """

    trained_quality: ClassVar[str | None] = "feature_norm"

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float | None = None,
        u_m: float = 0.8,
        lambda_g: float | None = None,
        kind: MagKind = "arc",
        easy_margin: bool = True,
        eps: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        if kind not in _KIND_DEFAULTS:
            raise ValueError(f"kind must be 'arc' or 'cos', got {kind!r}")
        default_l_m, default_lambda = _KIND_DEFAULTS[kind]
        l_m = default_l_m if l_m is None else l_m
        lambda_g = default_lambda if lambda_g is None else lambda_g
        if not 0.0 < l_a < u_a:
            raise ValueError(f"need 0 < l_a < u_a, got l_a={l_a}, u_a={u_a}")
        if lambda_g < 0.0:
            raise ValueError(f"lambda_g must be non-negative, got {lambda_g}")
        if scale <= 0.0:
            raise ValueError(f"scale must be positive, got {scale}")
        super().__init__(embedding_dim, num_classes, **kwargs)
        self.scale = scale
        self.l_a = l_a
        self.u_a = u_a
        self.l_m = l_m
        self.u_m = u_m
        self.lambda_g = lambda_g
        self.kind: MagKind = kind
        self.easy_margin = easy_margin
        self.eps = eps

    def init_centres_(self, weight: Tensor) -> None:
        """uniform(−1, 1), then every class centre rescaled to unit L2 norm (official ``MagLinear``)."""
        uniform_unit_rows_(weight)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, kind={self.kind}, scale={self.scale}, l_a={self.l_a}, u_a={self.u_a}, "
            f"l_m={self.l_m}, u_m={self.u_m}, lambda_g={self.lambda_g}, easy_margin={self.easy_margin}"
        )

    @property
    def feasibility_bound(self) -> float:
        """``s·k·u_a²·l_a²/(u_a² − l_a²)``, ``k = (u_m − l_m)/(u_a − l_a)`` (22.59 for the defaults; the official
        trainer prints it). With ``λ_g >= bound``, ``λ_g·|g'(l_a)| >= s·k`` bounds the margin's pull on the
        magnitude, so ``∂L_i/∂a <= 0`` at ``a = l_a`` for every sample and the optimal magnitude lies in
        ``[l_a, u_a]``; strict convexity (unique optimum, growing with ``cos θ_y``) additionally needs the
        paper's assumption ``θ_y + m(a) <= π/2``. Derived for the angular margin.
        """
        k = (self.u_m - self.l_m) / (self.u_a - self.l_a)
        return self.scale * k * self.u_a**2 * self.l_a**2 / (self.u_a**2 - self.l_a**2)

    def margin(self, a: Tensor) -> Tensor:
        """``m(a)`` for already clamped magnitudes ``a``."""
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def regularizer(self, a: Tensor) -> Tensor:
        """``g(a) = a/u_a² + 1/a`` for already clamped magnitudes ``a``."""
        return a / self.u_a**2 + 1.0 / a

    def margin_terms(self, inputs: HeadInputs) -> MarginTerms:
        a = inputs.norms.clamp(self.l_a, self.u_a)
        m = self.margin(a)
        if self.kind == "arc":
            fallback: ArcFallback = "none" if self.easy_margin else "threshold"
            target = additive_angular_target(
                inputs.cos_target, m, easy_margin=self.easy_margin, fallback=fallback, eps=self.eps
            )
        else:
            target = additive_cosine_target(inputs.cos_target, m)
        g = self.regularizer(a)
        norms = inputs.norms.detach()
        logs = {
            "head/margin_mean": m.detach().mean(),
            "magface/g_mean": g.detach().mean(),
            "magface/loss_g": self.lambda_g * g.detach().mean(),
            "magface/clamped_low_frac": (norms < self.l_a).to(norms.dtype).mean(),
            "magface/clamped_high_frac": (norms > self.u_a).to(norms.dtype).mean(),
            "magface/lambda_feasible": torch.tensor(float(self.lambda_g >= self.feasibility_bound)),
        }
        return MarginTerms(self.scale * target, self.scale, extra_loss=self.lambda_g * g, logs=logs)
