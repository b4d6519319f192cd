"""UniTSFace's LResNetXEIR (``CVI-SZU/UniTSFace: backbone.py``; docs/methods.md, 'Backbones'), with its state-dict
layout.

    stem:   conv1 3×3 s1 (3→64) → bn1 → prelu
    block:  bn2(conv2(prelu(bn1(conv1(bn0(x)))))) + shortcut(x)
            every stride-2 convolution is 2×2 / stride 2 / no padding (``conv2`` of a stage's first block and
            ``downsample.0``), the others 3×3 / pad 1
    head:   bn4 → dropout(0.4) → fc5 = Conv2d(512→512, side×side, no bias) → flatten → bn5 (BatchNorm1d, weight 1,
            frozen)

``forward`` returns the raw embedding of one view. The official ``eval()`` forward returns ``f(x) + f(flip x)``;
here that fusion is recorded as ``preprocessing.flip_fusion = "sum"`` and applied by the inference code
(:class:`qualiface.models.FaceModel`), so training, export and inference share one module. The recipe clamps
every PReLU slope to ``>= 0.01`` after each optimizer step: :meth:`after_optimizer_step` (the trainer calls it).
The loss modules the official class owns (``sample_to_class_loss``, ``sample_to_sample_loss``) belong to the
``unitsface`` head here, not to the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.backbones.layers import feature_map_size
from qualiface.registry import BACKBONES

STAGE_WIDTHS = (64, 128, 256, 512)
PRELU_FLOOR = 0.01


def _conv(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    """3×3 / pad 1 at stride 1; 2×2 / stride 2 / no padding at stride 2 (UniTSFace's ``conv3x3``)."""
    if stride == 2:
        return nn.Conv2d(in_channels, out_channels, 2, stride=2, bias=False)
    return nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)


class IRBlock(nn.Module):
    """``bn2(conv2(prelu(bn1(conv1(bn0(x)))))) + shortcut(x)``, ``conv2`` strided."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv(in_channels, out_channels, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = _conv(out_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1:
            self.downsample = nn.Sequential(_conv(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class LResNetXEIR(Backbone):
    """UniTSFace's LResNet-E-IR (see the module docstring).

    Args:
        layers: blocks per stage (50: ``(3, 4, 14, 3)``).
        arch: registered name, for messages.
        embedding_dim: output width of ``fc5`` (512 in the official models).
        input_size: side of the square input, a multiple of 16 (``fc5``'s kernel is ``input_size / 16``).
        dropout: dropout before ``fc5`` (0.4).
        zero_init_residual: zero every block's ``bn2.weight`` at initialisation (official ``True``).
        quality_branch: ``None`` or a registered quality branch (see :mod:`qualiface.quality.branches`); it reads
            the map after ``bn4`` and dropout (512 × side × side, the bottleneck) or the embedding.
        quality_options: The branch's options.

    Initialisation as the official code: convolutions Kaiming-normal (``a = 1``, fan-in: std ``1/sqrt(fan_in)``),
    PReLU slopes 0.25, BatchNorm weight 1 / bias 0.
    """

    # The four stages, set by name (``setattr``) in ``__init__``.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        layers: Sequence[int],
        *,
        arch: str = "lresnet",
        embedding_dim: int = 512,
        input_size: int = 112,
        dropout: float = 0.4,
        zero_init_residual: bool = True,
        quality_branch: str | None = None,
        **quality_options: Any,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"{arch}: layers must give the blocks of 4 stages, got {tuple(layers)}")
        side = feature_map_size(input_size, arch)
        self.arch = arch
        self.embedding_dim = embedding_dim
        self.preprocessing = Preprocessing(
            input_size=(3, input_size, input_size),
            channel_order="RGB",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            flip_fusion="sum",
            source="unitsface",
        )
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU(64)
        in_channels = 64
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, layers, strict=True), start=1):
            stage = [IRBlock(in_channels, width, 2), *(IRBlock(width, width) for _ in range(blocks - 1))]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = width
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout(p=dropout)
        self.fc5 = nn.Conv2d(512, embedding_dim, side, bias=False)
        self.bn5 = nn.BatchNorm1d(embedding_dim)
        self.bn5.weight.requires_grad_(False)
        self.bottleneck_dim = 512 * side * side
        self._initialise(zero_init_residual)
        self._add_quality_branch(quality_branch, **quality_options)

    def _initialise(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
            elif isinstance(module, nn.PReLU):
                nn.init.constant_(module.weight, 0.25)
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, IRBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        """The map after ``bn4`` and dropout, ``(B, 512, side, side)``."""
        x = self.prelu(self.bn1(self.conv1(images)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.dropout(self.bn4(x))

    def embed(self, bottleneck: Tensor) -> Tensor:
        """Raw embedding of one view: ``bn5(flatten(fc5(bottleneck)))``."""
        return self.bn5(torch.flatten(self.fc5(bottleneck), 1))

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Clamp every PReLU slope to ``>= 0.01`` (the official ``restrict_weights``)."""
        for module in self.modules():
            if isinstance(module, nn.PReLU):
                module.weight.clamp_(min=PRELU_FLOOR)


def _entry(arch: str, layers: Sequence[int]) -> Any:
    def build(**kwargs: Any) -> LResNetXEIR:
        return LResNetXEIR(layers, arch=arch, **kwargs)

    build.__name__ = arch
    build.__doc__ = f"UniTSFace {arch}: LResNet-E-IR with {tuple(layers)} blocks per stage."
    return BACKBONES.register(arch)(build)


lresnet50eir = _entry("lresnet50eir", (3, 4, 14, 3))
lresnet100eir = _entry("lresnet100eir", (3, 13, 30, 3))
lresnet200eir = _entry("lresnet200eir", (3, 33, 60, 3))
