"""insightface ``arcface_torch`` iResNet, with arcface_torch's exact state-dict layout.

An arcface_torch ``model.pt`` / ``backbone.pth`` loads with ``strict=True``; with
``quality_branch="cr_fiqa"`` and ``features_weight_trainable=True`` the model is CR-FIQA's iResNet
(extra keys ``qs.weight``, ``qs.bias``); with ``quality_branch="scaleface"`` ScaleFace's ``MLPHead``
sits under ``scale_predictor.``.

MagFace's iResNet (``IrvingMeng/MagFace: models/iresnet.py``) has the same keys and differs in four options
plus the initialisation, all arguments here (:data:`MAGFACE_OPTIONS`): channel dropout ``Dropout2d(p=0.4)``
on the 7×7 map after ``bn2`` (before the flatten), BatchNorm ``eps=2e-5, momentum=0.9``, a trainable
``features`` weight, and Kaiming-normal (fan-out) convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from qualiface.backbones.base import outside_autocast
from qualiface.backbones.layers import BranchedBackbone
from qualiface.registry import BACKBONES

STAGE_WIDTHS = (64, 128, 256, 512)

DropoutKind = Literal["element", "channel"]
ConvInit = Literal["normal", "kaiming"]

#: The options that make :class:`IResNet` MagFace's iResNet (``IrvingMeng/MagFace: models/iresnet.py``).
MAGFACE_OPTIONS: dict[str, Any] = {
    "dropout": 0.4,
    "dropout_kind": "channel",
    "bn_eps": 2e-5,
    "bn_momentum": 0.9,
    "features_weight_trainable": True,
    "conv_init": "kaiming",
}


class IBasicBlock(nn.Module):
    """Improved residual block: ``bn3(conv2(prelu(bn2(conv1(bn1(x)))))) + shortcut(x)``; ``conv2`` is strided."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, bn_eps: float = 1e-5, bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=bn_momentum)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _stage(in_channels: int, width: int, blocks: int, bn_eps: float, bn_momentum: float) -> nn.Sequential:
    """One stage: a stride-2 block with a 1×1-conv downsample, then ``blocks - 1`` stride-1 blocks."""
    first = IBasicBlock(in_channels, width, 2, bn_eps, bn_momentum)
    return nn.Sequential(first, *(IBasicBlock(width, width, 1, bn_eps, bn_momentum) for _ in range(blocks - 1)))


class IResNet(BranchedBackbone):
    """arcface_torch iResNet: 3×3 stem, four stages whose first block has stride 2, then
    ``bn2 -> flatten -> dropout -> fc -> features`` (BatchNorm1d, weight fixed at 1 unless made trainable);
    with ``dropout_kind="channel"`` (MagFace) ``bn2 -> Dropout2d -> flatten -> fc -> features``.

    ``forward`` returns the raw ``features`` output (not L2-normalised). Weight init as arcface_torch:
    convolutions N(0, 0.1) (``conv_init="kaiming"``: Kaiming normal, fan-out, ReLU gain, as MagFace),
    BatchNorm2d weight 1 / bias 0, Linear PyTorch default. MagFace's iResNet is ``**MAGFACE_OPTIONS``.

    Args:
        layers: Blocks per stage.
        arch: Registered name, used in messages.
        embedding_dim: Output width (arcface_torch ``num_features``).
        dropout: Dropout probability (CR-FIQA and MagFace train with 0.4).
        dropout_kind: ``"element"`` (arcface_torch, CR-FIQA: ``Dropout`` on the flattened map) or ``"channel"``
            (MagFace: ``Dropout2d`` on the ``bn2`` map, each sample's whole channels zeroed).
        bn_eps: Epsilon of every BatchNorm (MagFace: 2e-5).
        bn_momentum: PyTorch momentum of every BatchNorm (MagFace: 0.9, i.e. the running statistics keep 10% of
            their old value at each step, as MagFace's code writes it).
        features_weight_trainable: Train ``features.weight`` (CR-FIQA, MagFace) instead of freezing it.
        conv_init: ``"normal"`` (arcface_torch, CR-FIQA: N(0, 0.1)) or ``"kaiming"`` (MagFace: Kaiming normal,
            ``mode="fan_out"``, ReLU gain).
        zero_init_residual: Zero each block's ``bn2.weight``, as arcface_torch does.
        float32_ends: Under autocast, compute ``fc`` and ``features`` in float32 with autocast off, as
            arcface_torch's iResNet (its autocast region ends at the dropout; ``fc`` takes ``x.float()``), so an
            fp16 or bf16 run keeps the 25,088-wide ``fc`` product in float32; ``False`` lets autocast cover them.
        input_size: Side of the square input; the ``fc`` input is ``512 * (input_size / 16) ** 2``.
        quality_branch: ``None`` or a registered quality branch (``"cr_fiqa"``, ``"scaleface"``; see
            :mod:`qualiface.quality.branches`).
        quality_options: The branch's options (ScaleFace: ``scale_activation``, ``scale_coefficient``).
    """

    def __init__(
        self,
        layers: Sequence[int],
        *,
        arch: str = "iresnet",
        embedding_dim: int = 512,
        dropout: float = 0.0,
        dropout_kind: DropoutKind = "element",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        features_weight_trainable: bool = False,
        conv_init: ConvInit = "normal",
        zero_init_residual: bool = False,
        float32_ends: bool = True,
        input_size: int = 112,
        quality_branch: str | None = None,
        **quality_options: Any,
    ) -> None:
        super().__init__()
        if dropout_kind not in ("element", "channel"):
            raise ValueError(f"dropout_kind must be 'element' or 'channel', got {dropout_kind!r}")
        if conv_init not in ("normal", "kaiming"):
            raise ValueError(f"conv_init must be 'normal' or 'kaiming', got {conv_init!r}")
        self._describe(arch, layers, embedding_dim, input_size, "RGB", "insightface")

        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=bn_eps, momentum=bn_momentum)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        c1, c2, c3, c4 = STAGE_WIDTHS
        self.layer1 = _stage(c1, c1, layers[0], bn_eps, bn_momentum)
        self.layer2 = _stage(c1, c2, layers[1], bn_eps, bn_momentum)
        self.layer3 = _stage(c2, c3, layers[2], bn_eps, bn_momentum)
        self.layer4 = _stage(c3, c4, layers[3], bn_eps, bn_momentum)
        self.bn2 = nn.BatchNorm2d(c4, eps=bn_eps, momentum=bn_momentum)
        # no parameters either way: the state-dict keys stay arcface_torch's (and MagFace's)
        self.channel_dropout = dropout_kind == "channel"
        self.dropout = nn.Dropout2d(p=dropout) if self.channel_dropout else nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.bottleneck_dim, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=bn_eps, momentum=bn_momentum)
        self._init_weights(zero_init_residual, conv_init)
        self.features.weight.requires_grad_(features_weight_trainable)
        self.float32_ends = float32_ends
        self._add_quality_branch(quality_branch, **quality_options)

    def _init_weights(self, zero_init_residual: bool, conv_init: ConvInit) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if conv_init == "kaiming":
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, IBasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(images)))
        x = self.bn2(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        if self.channel_dropout:  # MagFace: Dropout2d on the (N, 512, 7, 7) map, then flatten
            return self.dropout(x).flatten(1)
        return self.dropout(x.flatten(1))

    def embed(self, bottleneck: Tensor) -> Tensor:
        return outside_autocast(self._fc_features, bottleneck, self.fc.weight, self.float32_ends)

    def _fc_features(self, bottleneck: Tensor) -> Tensor:
        return self.features(self.fc(bottleneck))


@BACKBONES.register("iresnet18")
def iresnet18(**kwargs: Any) -> IResNet:
    """arcface_torch ``r18``: blocks (2, 2, 2, 2); kwargs as :class:`IResNet`."""
    return IResNet((2, 2, 2, 2), arch="iresnet18", **kwargs)


@BACKBONES.register("iresnet34")
def iresnet34(**kwargs: Any) -> IResNet:
    """arcface_torch ``r34``: blocks (3, 4, 6, 3); kwargs as :class:`IResNet`."""
    return IResNet((3, 4, 6, 3), arch="iresnet34", **kwargs)


@BACKBONES.register("iresnet50")
def iresnet50(**kwargs: Any) -> IResNet:
    """arcface_torch ``r50``: blocks (3, 4, 14, 3); kwargs as :class:`IResNet`."""
    return IResNet((3, 4, 14, 3), arch="iresnet50", **kwargs)


@BACKBONES.register("iresnet100")
def iresnet100(**kwargs: Any) -> IResNet:
    """arcface_torch ``r100``: blocks (3, 13, 30, 3); kwargs as :class:`IResNet`."""
    return IResNet((3, 13, 30, 3), arch="iresnet100", **kwargs)


@BACKBONES.register("iresnet200")
def iresnet200(**kwargs: Any) -> IResNet:
    """arcface_torch ``r200``: blocks (6, 26, 60, 6); kwargs as :class:`IResNet`."""
    return IResNet((6, 26, 60, 6), arch="iresnet200", **kwargs)
