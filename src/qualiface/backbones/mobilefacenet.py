"""insightface ``arcface_torch`` MobileFaceNet (``mbf``, ``mbf_large``) with its exact state-dict layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.backbones.layers import kaiming_init_
from qualiface.registry import BACKBONES


class ConvBlock(nn.Module):
    """``layers`` = [Conv2d (no bias), BatchNorm2d, PReLU] (no PReLU with ``activation=False``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            *([nn.PReLU(out_channels)] if activation else []),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LinearBlock(ConvBlock):
    """``layers`` = [Conv2d (no bias), BatchNorm2d], no activation."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding, groups, activation=False)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand to ``groups`` channels, depthwise k×k, 1×1 linear projection (+ input)."""

    def __init__(
        self, in_channels: int, out_channels: int, residual: bool, stride: int = 2, groups: int = 1, kernel: int = 3
    ) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_channels, groups),
            ConvBlock(groups, groups, kernel, stride, padding=kernel // 2, groups=groups),
            LinearBlock(groups, out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_block`` residual stride-1 :class:`DepthWise` units of width ``channels``."""

    def __init__(self, channels: int, num_block: int, groups: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DepthWise(channels, channels, residual=True, stride=1, groups=groups) for _ in range(num_block))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv head: 7×7 depthwise LinearBlock, flatten, Linear (no bias), BatchNorm1d."""

    def __init__(self, embedding_dim: int, channels: int = 512) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(channels, channels, kernel=7, groups=channels),
            nn.Flatten(),
            nn.Linear(channels, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MobileFaceNet(Backbone):
    """arcface_torch MobileFaceNet; input 112×112 (the GDC head is a 7×7 depthwise conv).

    ``forward`` returns the raw ``features`` output (not L2-normalised). Init as arcface_torch: conv and
    Linear Kaiming-normal (fan_out, relu), BatchNorm2d weight 1 / bias 0.

    Args:
        blocks: Residual units of the four stages (``mbf``: (1, 4, 6, 2); ``mbf_large``: (2, 8, 12, 4)).
            A first entry of 1 means a grouped ConvBlock instead of a Residual stage.
        scale: Width multiplier (``mbf``: 2, ``mbf_large``: 4).
        arch: Registered name, used in messages.
        embedding_dim: Output width (arcface_torch ``num_features``).
        quality_branch: ``None`` or a registered quality branch (see :mod:`qualiface.quality.branches`); it reads
            the ``conv_sep`` output (512 × 7 × 7, the bottleneck) or the embedding.
        quality_options: The branch's options.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 2,
        *,
        arch: str = "mobilefacenet",
        embedding_dim: int = 512,
        quality_branch: str | None = None,
        **quality_options: Any,
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"{arch}: blocks must give 4 stages, got {tuple(blocks)}")
        self.arch = arch
        self.embedding_dim = embedding_dim
        self.preprocessing = Preprocessing(
            input_size=(3, 112, 112),
            channel_order="RGB",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            source="insightface",
        )
        c1, c2 = 64 * scale, 128 * scale
        first: nn.Module
        if blocks[0] == 1:
            first = ConvBlock(c1, c1, kernel=3, stride=1, padding=1, groups=64)
        else:
            first = Residual(c1, blocks[0], groups=128)
        self.layers = nn.ModuleList(
            [
                ConvBlock(3, c1, kernel=3, stride=2, padding=1),
                first,
                DepthWise(c1, c1, residual=False, stride=2, groups=128),
                Residual(c1, blocks[1], groups=128),
                DepthWise(c1, c2, residual=False, stride=2, groups=256),
                Residual(c2, blocks[2], groups=256),
                DepthWise(c2, c2, residual=False, stride=2, groups=512),
                Residual(c2, blocks[3], groups=256),
            ]
        )
        self.conv_sep = ConvBlock(c2, 512)
        self.features = GDC(embedding_dim)
        self.bottleneck_dim = 512 * 7 * 7
        kaiming_init_(self)
        self._add_quality_branch(quality_branch, **quality_options)

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        """The ``conv_sep`` output ``(B, 512, 7, 7)``."""
        x = images
        for layer in self.layers:
            x = layer(x)
        return self.conv_sep(x)

    def embed(self, bottleneck: Tensor) -> Tensor:
        """Raw (un-normalised) embeddings ``(B, embedding_dim)``: the GDC head ``features``."""
        return self.features(bottleneck)


@BACKBONES.register("mobilefacenet")
def mobilefacenet(**kwargs: Any) -> MobileFaceNet:
    """arcface_torch ``mbf``: blocks (1, 4, 6, 2), scale 2; kwargs as :class:`MobileFaceNet`."""
    return MobileFaceNet((1, 4, 6, 2), 2, arch="mobilefacenet", **kwargs)


@BACKBONES.register("mobilefacenet_large")
def mobilefacenet_large(**kwargs: Any) -> MobileFaceNet:
    """arcface_torch ``mbf_large``: blocks (2, 8, 12, 4), scale 4; kwargs as :class:`MobileFaceNet`."""
    return MobileFaceNet((2, 8, 12, 4), 4, arch="mobilefacenet_large", **kwargs)
