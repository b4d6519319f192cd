"""The backbone contract: images in, raw (un-normalised) embeddings out, preprocessing recorded on the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import Tensor, nn


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a backbone (the timm ``PretrainedCfg`` idea, made face-specific).

    ``pixel = (value / 255 - mean) / std`` per channel, channels in ``channel_order``, faces aligned to
    ``alignment`` at ``input_size`` = (channels, height, width).
    """

    input_size: tuple[int, int, int] = (3, 112, 112)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    alignment: str = "arcface_5pt"
    flip_fusion: Literal["none", "sum"] = "none"
    source: str = "qualiface"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for configs and checkpoints."""
        return asdict(self)


class Backbone(nn.Module):
    """Maps images ``(B, 3, H, W)`` to raw embeddings ``(B, embedding_dim)``; the norm is kept.

    Subclasses set ``embedding_dim`` and ``preprocessing``. A backbone built with a quality branch
    (``quality_branch="cr_fiqa"`` or ``"scaleface"``) also returns that branch's output from
    :meth:`forward_aux` under the keyword the matching head expects (``quality`` or ``scale``).
    """

    embedding_dim: int
    preprocessing: Preprocessing
    quality_branch: str | None = None
    arch: str = ""  # the registered name, set by the entrypoint; used in messages

    def forward_aux(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Embeddings and the auxiliary outputs (``{}`` without a quality branch), each of shape ``(B,)``."""
        return self(images), {}

    def after_optimizer_step(self) -> None:
        """Called by the trainer after every optimizer step; a no-op unless the architecture's recipe constrains
        its weights (UniTSFace's LResNetXEIR clamps PReLU slopes)."""
