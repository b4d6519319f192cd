"""Building blocks shared by the backbones: ScaleFace's scale head (the module of the ``scaleface`` quality
branch), the iResNet / IR description, initialisers.

:class:`BranchedBackbone` factors what iResNet and IR share: both end in ``flatten -> dropout -> Linear ->
BatchNorm1d``; the flattened map is the *bottleneck* a ScaleFace branch reads and the ``BatchNorm1d`` output the
embedding a CR-FIQA ``qs`` reads (see :mod:`qualiface.quality.branches`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from qualiface.backbones.base import Backbone, Preprocessing

ScaleActivation = Literal["exp", "sigm", "sigm_mul", "sigm_sum", "sigm_sum_mul", "relu", "lin"]

SCALE_ACTIVATIONS: tuple[str, ...] = ("exp", "sigm", "sigm_mul", "sigm_sum", "sigm_sum_mul", "relu", "lin")


def scale_activation(z: Tensor, activation: str, coefficient: float) -> Tensor:
    """ScaleFace's output activations (``stat-ml/scale-face: MLPHead``), ``c`` = ``coefficient``.

    ``exp``: e^z; ``sigm``: σ(z); ``sigm_mul``: c·σ(z); ``sigm_sum``: c + σ(z); ``sigm_sum_mul``: c + c·σ(z);
    ``relu``: c·relu(z); ``lin``: z.
    """
    if activation == "exp":
        return torch.exp(z)
    if activation == "sigm":
        return torch.sigmoid(z)
    if activation == "sigm_mul":
        return coefficient * torch.sigmoid(z)
    if activation == "sigm_sum":
        return coefficient + torch.sigmoid(z)
    if activation == "sigm_sum_mul":
        return coefficient + coefficient * torch.sigmoid(z)
    if activation == "relu":
        return coefficient * torch.relu(z)
    if activation == "lin":
        return z
    raise ValueError(f"unknown scale activation {activation!r}; expected one of {', '.join(SCALE_ACTIVATIONS)}")


class MLPScaleHead(nn.Module):
    """ScaleFace's ``MLPHead``: an MLP on the bottleneck feature predicting one positive scale per sample.

    With the default ``num_feats=(25088, 512, 1)`` the keys are exactly ScaleFace's: ``mlp.0.weight``
    (Linear, no bias, Kaiming-normal), ``mlp.1.*`` (BatchNorm1d, ``affine=False``), ``mlp.2`` (ReLU),
    ``mlp.3.weight`` (Linear, no bias).

    Args:
        num_feats: Layer widths, input first, ``1`` last.
        activation: Output activation, see :func:`scale_activation`.
        coefficient: The ``c`` of the activation.
        batch_norm: Insert a non-affine BatchNorm1d after every hidden Linear.
    """

    def __init__(
        self,
        num_feats: Sequence[int] = (25088, 512, 1),
        activation: str = "sigm_mul",
        coefficient: float = 32.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(num_feats) < 2:
            raise ValueError(f"num_feats needs at least an input and an output width, got {tuple(num_feats)}")
        if activation not in SCALE_ACTIVATIONS:
            raise ValueError(f"unknown scale activation {activation!r}; expected one of {', '.join(SCALE_ACTIVATIONS)}")
        self.activation = activation
        self.coefficient = float(coefficient)
        layers: list[nn.Module] = []
        for in_feats, out_feats in itertools.pairwise(num_feats[:-1]):
            linear = nn.Linear(in_feats, out_feats, bias=False)
            nn.init.kaiming_normal_(linear.weight)
            layers.append(linear)
            if batch_norm:
                layers.append(nn.BatchNorm1d(out_feats, affine=False))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(num_feats[-2], num_feats[-1], bias=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, bottleneck: Tensor) -> Tensor:
        """Scales ``(B, num_feats[-1])`` from the flattened bottleneck ``(B, num_feats[0])``.

        The input is cast to the head's parameter dtype (autocast, if active, still decides the matmul dtype).
        """
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)  # __init__ builds the MLP so
        z = self.mlp(bottleneck.to(first.weight.dtype))
        return scale_activation(z, self.activation, self.coefficient)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, coefficient={self.coefficient}"


class BranchedBackbone(Backbone):
    """The iResNet and IR families: ``flatten -> dropout -> fc -> BatchNorm1d`` after the last stage, a square
    input whose side is a multiple of 16, and the shared preprocessing ``(x/255 − 0.5)/0.5``. Any registered
    quality branch attaches through :meth:`Backbone._add_quality_branch`.
    """

    def _describe(
        self,
        arch: str,
        layers: Sequence[int],
        embedding_dim: int,
        input_size: int,
        channel_order: Literal["RGB", "BGR"],
        source: str,
    ) -> None:
        """Record the name, sizes and preprocessing shared by the iResNet and IR families (4 stages, last 512 wide,
        input ``(x/255 − 0.5)/0.5``)."""
        if len(layers) != 4:
            raise ValueError(f"{arch}: layers must give the blocks of 4 stages, got {tuple(layers)}")
        side = feature_map_size(input_size, arch)
        self.arch = arch
        self.embedding_dim = embedding_dim
        self.bottleneck_dim = 512 * side * side
        self.preprocessing = Preprocessing(
            input_size=(3, input_size, input_size),
            channel_order=channel_order,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            source=source,
        )


def kaiming_init_(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convolutions and linears with zero biases, unit/zero BatchNorm2d: the
    initialisation of AdaFace's IR and insightface's MobileFaceNet."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def feature_map_size(input_size: int, arch: str) -> int:
    """Side of the final 16×-downsampled feature map; ``input_size`` must be a positive multiple of 16."""
    if input_size <= 0 or input_size % 16:
        raise ValueError(f"{arch}: input_size must be a positive multiple of 16, got {input_size}")
    return input_size // 16
