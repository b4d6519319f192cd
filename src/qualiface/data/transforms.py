"""Training-time image transforms in pure PyTorch: flip, AdaFace's augmentations, normalisation.

Images are ``(C, H, W)`` tensors holding pixel values in ``[0, 255]``, either ``uint8`` or floating point, with
channels in **RGB** order (the decoded-record order); every transform returns the input dtype (``uint8`` results are
rounded to nearest), except :class:`Normalize`, which returns ``float32`` in the backbone's channel order.

Every random transform takes an optional :class:`torch.Generator`, so a pipeline is reproducible from a seed::

    pipeline = training_transform(backbone.preprocessing, augment="adaface")
    x = pipeline(image, torch.Generator().manual_seed(42))

AdaFace (``mk-minchul/AdaFace: dataset/augmenter.py``) applies, each with probability 0.2 and in this order, before
the random horizontal flip:

1. a random-resized crop (scale 0.2–1, ratio 3/4–4/3, torchvision's sampler) pasted back into a zero canvas at its
   original place (:class:`RandomCropPaste`);
2. a low-resolution round trip: resize to ``U(0.2, 1)`` times the side and back, the down and up interpolation each
   drawn from nearest / bilinear / bicubic / area (:class:`RandomLowResolution`). AdaFace uses OpenCV, whose
   ``INTER_LANCZOS4`` has no ``torch.nn.functional.interpolate`` counterpart and is left out; the other four use
   the same half-pixel convention as OpenCV (``align_corners=False``, no antialiasing);
3. photometric jitter, torchvision ``ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0)``: the factors
   are drawn from ``U(1 - s, 1 + s)`` and applied in a random order (:class:`RandomColorJitter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qualiface.backbones.base import Preprocessing

__all__ = [
    "INTERPOLATIONS",
    "Compose",
    "Normalize",
    "RandomColorJitter",
    "RandomCropPaste",
    "RandomHorizontalFlip",
    "RandomLowResolution",
    "RandomTransform",
    "Transform",
    "adaface_augmentation",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "crop_paste",
    "hflip",
    "low_resolution",
    "normalize",
    "sample_crop_box",
    "to_tensor",
    "training_transform",
]

Interpolation = Literal["nearest", "bilinear", "bicubic", "area"]
#: Interpolations the low-resolution augmentation draws from.
INTERPOLATIONS: tuple[Interpolation, ...] = ("nearest", "bilinear", "bicubic", "area")
_GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision / PIL
#: A pipeline step: ``(image, generator) -> image``.
Transform = Callable[[Tensor, torch.Generator | None], Tensor]


def _check_image(img: object) -> None:
    if not isinstance(img, Tensor) or img.ndim != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(img, 'shape', type(img))}")


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


def _restore(out: Tensor, like: Tensor) -> Tensor:
    """Clamp to ``[0, 255]`` and cast back to the dtype of ``like`` (rounding for integer dtypes)."""
    out = out.clamp(0.0, 255.0)
    if not like.is_floating_point():
        out = out.round()
    return out.to(like.dtype)


def to_tensor(image: np.ndarray) -> Tensor:
    """An ``(H, W, C)`` or ``(H, W)`` array (e.g. a decoded ``uint8`` image) as a ``(C, H, W)`` tensor, same dtype."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# ----------------------------------------------------------------------------------------------- deterministic kernels


def hflip(img: Tensor) -> Tensor:
    """Mirror left–right (flip the last axis)."""
    return img.flip(-1)


def crop_paste(img: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """Keep the box ``[top, top + height) × [left, left + width)`` in place and zero everything else."""
    _check_image(img)
    out = torch.zeros_like(img)
    out[:, top : top + height, left : left + width] = img[:, top : top + height, left : left + width]
    return out


def low_resolution(
    img: Tensor, side_ratio: float, down: Interpolation = "bilinear", up: Interpolation = "bilinear"
) -> Tensor:
    """Resize to ``int(side_ratio · side)`` (at least 1) with ``down``, then back to the input size with ``up``.

    Args:
        img: ``(C, H, W)`` image.
        side_ratio: Ratio of the small side to the original, in ``(0, 1]``.
        down: Interpolation for the down-sizing.
        up: Interpolation for the up-sizing.

    Returns:
        The degraded image, input shape and dtype.
    """
    _check_image(img)
    if not 0.0 < side_ratio <= 1.0:
        raise ValueError(f"side_ratio must be in (0, 1], got {side_ratio}")
    for mode in (down, up):
        if mode not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {mode!r}")
    h, w = img.shape[-2:]
    small = (max(1, int(side_ratio * h)), max(1, int(side_ratio * w)))
    x = img.to(torch.float32)[None]

    def resize(t: Tensor, size: tuple[int, int], mode: Interpolation) -> Tensor:
        if mode in ("bilinear", "bicubic"):
            return F.interpolate(t, size=size, mode=mode, align_corners=False)
        return F.interpolate(t, size=size, mode=mode)

    x = resize(resize(x, small, down), (h, w), up)
    return _restore(x[0], img)


def _grey(img: Tensor) -> Tensor:
    if img.shape[0] == 1:
        return img
    if img.shape[0] != 3:
        raise ValueError(f"colour adjustments need 1 or 3 channels, got {img.shape[0]}")
    r, g, b = img.unbind(0)
    return (_GREY_WEIGHTS[0] * r + _GREY_WEIGHTS[1] * g + _GREY_WEIGHTS[2] * b)[None]


def _blend(img: Tensor, other: Tensor, factor: float) -> Tensor:
    x = img.to(torch.float32)
    return _restore(factor * x + (1.0 - factor) * other, img)


def adjust_brightness(img: Tensor, factor: float) -> Tensor:
    """Scale the pixel values by ``factor`` (torchvision ``adjust_brightness``); 1 is the identity."""
    _check_image(img)
    return _blend(img, torch.zeros((), dtype=torch.float32), factor)


def adjust_contrast(img: Tensor, factor: float) -> Tensor:
    """Blend with the image's mean grey level (torchvision ``adjust_contrast``); 1 is the identity."""
    _check_image(img)
    return _blend(img, _grey(img.to(torch.float32)).mean(), factor)


def adjust_saturation(img: Tensor, factor: float) -> Tensor:
    """Blend with the image's greyscale version (torchvision ``adjust_saturation``); 1 is the identity."""
    _check_image(img)
    return _blend(img, _grey(img.to(torch.float32)), factor)


def normalize(img: Tensor, preprocessing: Preprocessing) -> Tensor:
    """RGB ``[0, 255]`` image(s) ``(..., 3, H, W)`` to the backbone's input: channel order, then ``(x/255 - mean)/std``.

    Returns:
        A ``float32`` tensor of the same shape.
    """
    if img.ndim < 3 or img.shape[-3] != 3:
        raise ValueError(f"normalize needs (..., 3, H, W) RGB images, got shape {tuple(img.shape)}")
    x = img.to(torch.float32)
    if preprocessing.channel_order == "BGR":
        x = x.flip(-3)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(3, 1, 1)
    return (x / 255.0 - mean) / std


def sample_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Random-resized-crop box ``(top, left, h, w)``: torchvision's ``RandomResizedCrop.get_params`` algorithm.

    Up to 10 tries of area ``U(scale) · H · W`` and log-uniform aspect ``w/h`` in ``ratio``; if none fits, the
    largest central box whose aspect is clamped to ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, generator)
            left = _randint(width - w + 1, generator)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# ----------------------------------------------------------------------------------------------- random transforms


class RandomTransform:
    """Applies :meth:`apply` with probability ``p`` (one uniform draw per call from the generator)."""

    def __init__(self, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(img)
        if float(torch.rand((), generator=generator, dtype=torch.float64)) < self.p:
            return self.apply(img, generator)
        return img

    def apply(self, img: Tensor, generator: torch.Generator | None) -> Tensor:
        """The transform itself, drawing any parameters from ``generator``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(RandomTransform):
    """Mirror left–right with probability ``p`` (default 0.5)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, img: Tensor, generator: torch.Generator | None) -> Tensor:
        """Flip."""
        return hflip(img)


class RandomCropPaste(RandomTransform):
    """AdaFace crop augmentation: a random-resized-crop box kept in place on a zero canvas, with probability ``p``."""

    def __init__(
        self, p: float = 0.2, scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
    ) -> None:
        super().__init__(p)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale = scale
        self.ratio = ratio

    def apply(self, img: Tensor, generator: torch.Generator | None) -> Tensor:
        """Sample a box and zero everything outside it."""
        box = sample_crop_box(img.shape[-2], img.shape[-1], self.scale, self.ratio, generator)
        return crop_paste(img, *box)


class RandomLowResolution(RandomTransform):
    """AdaFace low-resolution augmentation: down/up resize round trip with probability ``p``."""

    def __init__(
        self,
        p: float = 0.2,
        side_ratio: tuple[float, float] = (0.2, 1.0),
        interpolations: Sequence[Interpolation] = INTERPOLATIONS,
    ) -> None:
        super().__init__(p)
        if not 0.0 < side_ratio[0] <= side_ratio[1] <= 1.0:
            raise ValueError(f"side_ratio must satisfy 0 < min <= max <= 1, got {side_ratio}")
        bad = [m for m in interpolations if m not in INTERPOLATIONS]
        if bad or not interpolations:
            raise ValueError(f"interpolations must be a non-empty subset of {INTERPOLATIONS}, got {interpolations}")
        self.side_ratio = side_ratio
        self.interpolations = tuple(interpolations)

    def apply(self, img: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw the ratio and the two interpolations, then degrade."""
        ratio = _uniform(self.side_ratio[0], self.side_ratio[1], generator)
        down = self.interpolations[_randint(len(self.interpolations), generator)]
        up = self.interpolations[_randint(len(self.interpolations), generator)]
        return low_resolution(img, ratio, down, up)


class RandomColorJitter(RandomTransform):
    """Photometric jitter (torchvision ``ColorJitter`` without hue) with probability ``p``.

    Each strength ``s`` gives a factor ``U(max(0, 1 - s), 1 + s)``; a strength of 0 leaves that adjustment out. The
    three adjustments run in a random order.
    """

    def __init__(self, p: float = 0.2, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5) -> None:
        super().__init__(p)
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.strengths = (float(brightness), float(contrast), float(saturation))

    def apply(self, img: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw the order and the factors, then adjust."""
        fns: tuple[Callable[[Tensor, float], Tensor], ...] = (adjust_brightness, adjust_contrast, adjust_saturation)
        order = torch.randperm(3, generator=generator).tolist()
        factors = [_uniform(max(0.0, 1.0 - s), 1.0 + s, generator) if s > 0 else 1.0 for s in self.strengths]
        for i in order:
            if self.strengths[i] > 0:
                img = fns[i](img, factors[i])
        return img

    def __repr__(self) -> str:
        b, c, s = self.strengths
        return f"{type(self).__name__}(p={self.p}, brightness={b}, contrast={c}, saturation={s})"


class Normalize:
    """:func:`normalize` as a pipeline step (ignores the generator)."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return normalize(img, self.preprocessing)

    def __repr__(self) -> str:
        pp = self.preprocessing
        return f"Normalize(channel_order={pp.channel_order!r}, mean={pp.mean}, std={pp.std})"


class Compose:
    """Run transforms in order, threading one generator through them.

    Args:
        transforms: Callables ``(img, generator) -> img``.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for t in self.transforms:
            img = t(img, generator)
        return img

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def adaface_augmentation(p: float = 0.2, flip_p: float = 0.5) -> Compose:
    """AdaFace's training augmentation: crop-paste, low resolution and jitter (each ``p``), then the flip."""
    return Compose([RandomCropPaste(p), RandomLowResolution(p), RandomColorJitter(p), RandomHorizontalFlip(flip_p)])


def training_transform(
    preprocessing: Preprocessing, augment: Literal["none", "flip", "adaface"] = "flip", p: float = 0.2
) -> Compose:
    """A full training pipeline ending in :class:`Normalize` for ``preprocessing``.

    Args:
        preprocessing: The backbone's input contract.
        augment: ``"none"``, ``"flip"`` (random flip only, as arcface_torch) or ``"adaface"``.
        p: Probability of each AdaFace augmentation.
    """
    if augment == "none":
        steps: list[Transform] = []
    elif augment == "flip":
        steps = [RandomHorizontalFlip()]
    elif augment == "adaface":
        steps = list(adaface_augmentation(p).transforms)
    else:
        raise ValueError(f"augment must be 'none', 'flip' or 'adaface', got {augment!r}")
    return Compose([*steps, Normalize(preprocessing)])
