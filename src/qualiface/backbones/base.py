"""The backbone contract: images in, raw (un-normalised) embeddings out, preprocessing recorded on the model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn


def outside_autocast(module: Callable[[Tensor], Tensor], x: Tensor, weight: Tensor, enabled: bool = True) -> Tensor:
    """``module(x)``, and under autocast (when ``enabled``) with autocast off and ``x`` in ``weight``'s dtype: the
    layers arcface_torch's backbones leave outside their autocast region (iResNet's ``fc`` and ``features``, ViT's
    patch embedding and ``feature`` head), which an fp16 run computes in float32."""
    device = x.device.type
    if not (enabled and torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):
        return module(x)
    with torch.autocast(device_type=device, enabled=False):
        return module(x.to(weight.dtype))


#: How a face crop whose size differs from ``input_size`` is brought to it (see :class:`Preprocessing`).
RESIZE_POLICIES: tuple[str, ...] = ("area", "bilinear", "none")


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a backbone (the timm ``PretrainedCfg`` idea, made face-specific).

    One unit everywhere: ``mean`` and ``std`` apply to pixel values scaled to 0..1, i.e. the network input is
    ``(value / 255 − mean) / std`` per channel, with ``value`` the 0..255 pixel and the channels in
    ``channel_order``. (The common "mean 127.5, std 127.5 on 0..255" is ``mean 0.5, std 0.5`` here; "raw 0..255
    pixels" is ``mean 0, std 1/255``.) Faces are aligned to ``alignment`` (the ArcFace 5-point template on a
    112 × 112 crop) and brought to ``input_size`` = (channels, height, width) by ``resize``: ``"area"`` (the
    mean of the covered source pixels, Pillow's box filter), ``"bilinear"``, or ``"none"`` (a crop of another
    size is an error). ``flip_fusion`` ``"sum"`` means the family adds the embeddings of the image and its mirror
    image at test time.
    """

    input_size: tuple[int, int, int] = (3, 112, 112)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    alignment: str = "arcface_5pt"
    flip_fusion: Literal["none", "sum"] = "none"
    source: str = "qualiface"
    extra: dict[str, Any] = field(default_factory=dict)
    resize: Literal["area", "bilinear", "none"] = "area"

    def __post_init__(self) -> None:
        problems = []
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order {self.channel_order!r} (RGB or BGR)")
        if self.flip_fusion not in ("none", "sum"):
            problems.append(f"flip_fusion {self.flip_fusion!r} (none or sum)")
        if self.resize not in RESIZE_POLICIES:
            problems.append(f"resize {self.resize!r} ({', '.join(RESIZE_POLICIES)})")
        # The fields hold whatever a config or a checkpoint gave (lists, strings, wrong lengths): check them as
        # plain objects, not as the declared types.
        size: tuple[object, ...] = tuple(self.input_size)
        if len(size) != 3 or size[0] != 3 or not all(isinstance(v, int) and 0 < v <= 4096 for v in size):
            problems.append(f"input_size {self.input_size!r} (3, height, width)")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                problems.append(f"{name} {values!r} (three finite numbers)")
        std: tuple[object, ...] = tuple(self.std)
        if len(std) == 3 and any(v == 0 for v in std):
            problems.append(f"std {self.std!r} (no zero)")
        if problems:
            raise ValueError("invalid preprocessing: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for configs and checkpoints."""
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. ``RGB, (x/255 − 0.5)/0.5, 112x112, resize area, flip none``."""
        _, height, width = self.input_size

        def channels(values: tuple[float, ...]) -> str:
            return f"{values[0]:.6g}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:.6g}" for v in values) + ")"

        return (
            f"{self.channel_order}, (x/255 − {channels(self.mean)})/{channels(self.std)}, {width}x{height}, "
            f"resize {self.resize}, flip {self.flip_fusion}"
        )


class Backbone(nn.Module):
    """Maps images ``(B, 3, H, W)`` to raw embeddings ``(B, embedding_dim)``; the norm is kept.

    Every family splits its forward pass in two: :meth:`forward_bottleneck` (images to the final feature map,
    after the family's dropout; ``bottleneck_dim`` values per image once flattened) and :meth:`embed` (that map
    to the raw embedding). A quality branch registered in ``qualiface.registry.QUALITY_BRANCHES`` (``"cr_fiqa"``,
    ``"scaleface"``, ...) attaches to any backbone through :meth:`_add_quality_branch`, and :meth:`forward_aux`
    returns its output under the branch's ``aux_key`` (the keyword the matching head takes).
    A backbone that only overrides ``forward`` (no split) works without a quality branch.
    """

    embedding_dim: int
    bottleneck_dim: int = 0
    preprocessing: Preprocessing
    quality_branch: str | None = None
    arch: str = ""  # the registered name, set by the entrypoint; used in messages
    #: The constructor arguments, set by ``create_backbone`` and the loaders (what cards and exports record).
    arch_kwargs: dict[str, Any] = {}  # noqa: RUF012

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        """The final feature map ``(B, ...)`` that the embedding layer reads (after dropout)."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward pass")

    def embed(self, bottleneck: Tensor) -> Tensor:
        """Raw embedding ``(B, embedding_dim)`` from :meth:`forward_bottleneck`'s output."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward pass")

    def forward(self, images: Tensor) -> Tensor:
        """Raw (un-normalised) embeddings ``(B, embedding_dim)``."""
        return self.embed(self.forward_bottleneck(images))

    def forward_aux(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Embeddings and the quality branch's output (``{}`` without a branch), each of shape ``(B,)``."""
        if self.quality_branch is None:
            return self(images), {}
        from qualiface.quality.branches import get_branch

        branch = get_branch(self.quality_branch)
        bottleneck = self.forward_bottleneck(images)
        embeddings = self.embed(bottleneck)
        return embeddings, {branch.aux_key: branch.score(getattr(self, branch.module_name), embeddings, bottleneck)}

    def _add_quality_branch(self, quality_branch: str | None, **options: Any) -> None:
        """Attach the registered branch ``quality_branch`` (or nothing for ``None``); call it last in
        ``__init__`` so that the branch's keys follow the backbone's, as in the official checkpoints.
        ``options`` are the branch's constructor options (e.g. ScaleFace's ``scale_activation``)."""
        import qualiface.quality.branches as branches

        self.quality_branch = quality_branch
        if quality_branch is None:
            if options:
                raise TypeError(f"{self.arch or type(self).__name__}: options {sorted(options)} need a quality_branch")
            return
        try:
            branch = branches.get_branch(quality_branch)
        except KeyError:
            raise ValueError(
                f"unknown quality_branch {quality_branch!r}; expected None or one of "
                f"{', '.join(branches.branch_names())}"
            ) from None
        unknown = sorted(set(options) - set(branch.options))
        if unknown:
            raise TypeError(
                f"quality_branch {quality_branch!r} takes the options {sorted(branch.options) or 'none'}, not {unknown}"
            )
        module = branch.build(self.embedding_dim, self.bottleneck_dim, **{**branch.options, **options})
        setattr(self, branch.module_name, module)

    def after_optimizer_step(self) -> None:
        """Called by the trainer after every optimizer step; a no-op unless the architecture's recipe constrains
        its weights (UniTSFace's LResNetXEIR clamps PReLU slopes)."""
