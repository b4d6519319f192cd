"""The quality-estimator contract: preprocessed images in, one float32 score per image out, higher = better."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


class QualityEstimator(nn.Module):
    """Maps images ``(B, 3, H, W)``, already prepared as the backbone's ``preprocessing`` says, to ``(B,)``
    float32 quality scores; higher means better quality.

    The estimator holds the backbone as a sub-module, so ``estimator.eval()`` / ``estimator.train()`` set
    its mode, and it forces neither a mode nor ``torch.no_grad()``: scores stay differentiable. For
    inference call ``estimator.eval()`` and wrap the call in ``torch.inference_mode()``.
    """

    higher_is_better: ClassVar[bool] = True
    name: ClassVar[str]

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> Tensor:
        """Quality scores ``(B,)`` in float32."""
        raise NotImplementedError
