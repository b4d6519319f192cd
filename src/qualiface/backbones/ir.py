"""AdaFace IR / IR-SE (``mk-minchul/AdaFace: net.py``) with AdaFace's own state-dict keys.

The ``model.``-stripped state dict of an AdaFace checkpoint loads with ``strict=True``. AdaFace's forward
returns ``(x / ||x||, ||x||)``; this one returns the raw ``x`` (the ``output_layer.4`` output), from which
both are recovered, and ``||x||`` is AdaFace's quality proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from qualiface.backbones.layers import BranchedBackbone, kaiming_init_
from qualiface.registry import BACKBONES

STAGE_WIDTHS = (64, 128, 256, 512)


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1×1 convs, no bias."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BasicBlockIR(nn.Module):
    """AdaFace ``BasicBlockIR`` (``BasicBlockIRSE`` with ``se=True``): ``res_layer(x) + shortcut_layer(x)``.

    ``res_layer`` = [BN, conv3×3, BN, PReLU, conv3×3 (strided), BN] (+ ``se_block``); ``shortcut_layer`` is a
    parameter-free ``MaxPool2d(1, stride)`` when the width is unchanged, else a strided 1×1 conv + BN.
    """

    def __init__(self, in_channels: int, depth: int, stride: int, se: bool = False) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride=stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(depth),
        )
        if se:
            self.res_layer.add_module("se_block", SEModule(depth, 16))

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IR(BranchedBackbone):
    """AdaFace IR / IR-SE: ``input_layer`` stem, a flat ``body`` of units (each stage's first unit has
    stride 2, stage 1 included), ``output_layer`` = [BN2d, Dropout, Flatten, Linear, BatchNorm1d(affine=False)].

    ``forward`` returns the raw ``output_layer.4`` output. Init as AdaFace: conv and Linear Kaiming-normal
    (fan_out, relu) with zero bias, BatchNorm2d weight 1 / bias 0.

    Args:
        layers: Units per stage.
        se: Add the squeeze-and-excitation gate to every unit (IR-SE).
        arch: Registered name, used in messages.
        embedding_dim: Output width (AdaFace: 512).
        dropout: Dropout probability before the Linear (AdaFace: 0.4).
        input_size: Side of the square input (AdaFace: 112 or 224); the Linear input is
            ``512 * (input_size / 16) ** 2``.
        quality_branch: ``None`` or a registered quality branch (``"cr_fiqa"``, ``"scaleface"``; see
            :mod:`qualiface.quality.branches`).
        quality_options: The branch's options (ScaleFace: ``scale_activation``, ``scale_coefficient``).
    """

    def __init__(
        self,
        layers: Sequence[int],
        *,
        se: bool = False,
        arch: str = "ir",
        embedding_dim: int = 512,
        dropout: float = 0.4,
        input_size: int = 112,
        quality_branch: str | None = None,
        **quality_options: Any,
    ) -> None:
        super().__init__()
        self._describe(arch, layers, embedding_dim, input_size, "BGR", "adaface")

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(STAGE_WIDTHS[0]),
            nn.PReLU(STAGE_WIDTHS[0]),
        )
        units: list[nn.Module] = []
        in_channels = STAGE_WIDTHS[0]
        for width, num_units in zip(STAGE_WIDTHS, layers, strict=True):
            units.append(BasicBlockIR(in_channels, width, 2, se))
            units += [BasicBlockIR(width, width, 1, se) for _ in range(num_units - 1)]
            in_channels = width
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(self.bottleneck_dim, embedding_dim),
            nn.BatchNorm1d(embedding_dim, affine=False),
        )
        kaiming_init_(self)
        self._add_quality_branch(quality_branch, **quality_options)

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        x = self.body(self.input_layer(images))
        bn, dropout, flatten = self.output_layer[0], self.output_layer[1], self.output_layer[2]
        return flatten(dropout(bn(x)))

    def embed(self, bottleneck: Tensor) -> Tensor:
        return self.output_layer[4](self.output_layer[3](bottleneck))


@BACKBONES.register("ir_18")
def ir_18(**kwargs: Any) -> IR:
    """AdaFace ``ir_18``: units (2, 2, 2, 2); kwargs as :class:`IR`."""
    return IR((2, 2, 2, 2), arch="ir_18", **kwargs)


@BACKBONES.register("ir_34")
def ir_34(**kwargs: Any) -> IR:
    """AdaFace ``ir_34``: units (3, 4, 6, 3); kwargs as :class:`IR`."""
    return IR((3, 4, 6, 3), arch="ir_34", **kwargs)


@BACKBONES.register("ir_50")
def ir_50(**kwargs: Any) -> IR:
    """AdaFace ``ir_50``: units (3, 4, 14, 3); kwargs as :class:`IR`."""
    return IR((3, 4, 14, 3), arch="ir_50", **kwargs)


@BACKBONES.register("ir_101")
def ir_101(**kwargs: Any) -> IR:
    """AdaFace ``ir_101`` (AdaFace's 100-layer net): units (3, 13, 30, 3); kwargs as :class:`IR`."""
    return IR((3, 13, 30, 3), arch="ir_101", **kwargs)


@BACKBONES.register("ir_se_50")
def ir_se_50(**kwargs: Any) -> IR:
    """AdaFace ``ir_se_50``: units (3, 4, 14, 3) with SE gates; kwargs as :class:`IR`."""
    return IR((3, 4, 14, 3), se=True, arch="ir_se_50", **kwargs)


@BACKBONES.register("ir_se_101")
def ir_se_101(**kwargs: Any) -> IR:
    """AdaFace ``IR_SE_101``: units (3, 13, 30, 3) with SE gates; kwargs as :class:`IR`."""
    return IR((3, 13, 30, 3), se=True, arch="ir_se_101", **kwargs)
