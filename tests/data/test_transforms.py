"""Tests for qualiface.data.transforms: kernels, probabilities, determinism and normalisation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from qualiface.backbones.base import Preprocessing
from qualiface.data.transforms import (
    INTERPOLATIONS,
    Compose,
    Normalize,
    RandomColorJitter,
    RandomCropPaste,
    RandomHorizontalFlip,
    RandomLowResolution,
    RandomTransform,
    adaface_augmentation,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    crop_paste,
    hflip,
    low_resolution,
    normalize,
    sample_crop_box,
    to_tensor,
    training_transform,
)


def _image(seed: int = 0, size: tuple[int, int] = (32, 40), dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(1, 256, (3, *size), generator=g, dtype=torch.int64)
    return img.to(dtype)


def test_to_tensor() -> None:
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = to_tensor(arr)
    assert t.shape == (3, 2, 3)
    assert t.dtype == torch.uint8
    assert torch.equal(t[1], torch.from_numpy(arr[:, :, 1]))
    assert to_tensor(arr[:, :, 0]).shape == (1, 2, 3)


def test_flip_twice_is_identity() -> None:
    img = _image()
    assert torch.equal(hflip(img)[:, :, 0], img[:, :, -1])
    assert torch.equal(hflip(hflip(img)), img)
    always = RandomHorizontalFlip(p=1.0)
    assert torch.equal(always(always(img)), img)
    assert torch.equal(RandomHorizontalFlip(p=0.0)(img), img)


def test_crop_paste_keeps_pixels_in_place() -> None:
    img = _image()
    out = crop_paste(img, 3, 5, 10, 12)
    mask = torch.zeros(img.shape[-2:], dtype=torch.bool)
    mask[3:13, 5:17] = True
    assert torch.equal(out[:, mask], img[:, mask])
    assert (out[:, ~mask] == 0).all()


@pytest.mark.parametrize("seed", range(20))
def test_random_crop_paste_box(seed: int) -> None:
    img = _image(seed, (112, 112))  # no zero pixels in the input
    out = RandomCropPaste(p=1.0)(img, torch.Generator().manual_seed(seed))
    kept = (out != 0).all(dim=0)
    assert torch.equal(out[:, kept], img[:, kept])
    rows = kept.any(dim=1).nonzero().squeeze(1)
    cols = kept.any(dim=0).nonzero().squeeze(1)
    h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    assert kept.sum() == h * w  # one axis-aligned box
    assert 0.2 * 112 * 112 * 0.9 <= h * w <= 112 * 112
    assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15  # rounding to integers moves the ratio a little


def test_sample_crop_box_fallback() -> None:
    # a 1x100 image admits no 3/4..4/3 box of area >= 20: the central fallback with the clamped ratio is used
    top, left, h, w = sample_crop_box(1, 100, generator=torch.Generator().manual_seed(0))
    assert (top, h) == (0, 1)
    assert w == 1
    assert left == (100 - 1) // 2


@pytest.mark.parametrize("down", INTERPOLATIONS)
@pytest.mark.parametrize("up", INTERPOLATIONS)
def test_low_resolution_ratio_one_is_identity(down: str, up: str) -> None:
    for dtype in (torch.uint8, torch.float32):
        img = _image(dtype=dtype)
        out = low_resolution(img, 1.0, down, up)  # type: ignore[arg-type]
        assert out.dtype == dtype
        torch.testing.assert_close(out, img, rtol=0, atol=1e-4)


def test_low_resolution_degrades() -> None:
    img = _image(size=(64, 64))
    out = low_resolution(img, 0.25, "area", "nearest")
    assert out.shape == img.shape
    assert out.dtype == torch.uint8
    # nearest up-sampling from 16x16 gives constant 4x4 blocks
    blocks = out.view(3, 16, 4, 16, 4)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    with pytest.raises(ValueError, match="side_ratio"):
        low_resolution(img, 0.0)
    with pytest.raises(ValueError, match="interpolation"):
        low_resolution(img, 0.5, "lanczos")  # type: ignore[arg-type]


@pytest.mark.parametrize("fn", [adjust_brightness, adjust_contrast, adjust_saturation])
def test_jitter_factor_one_is_identity(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    for dtype in (torch.uint8, torch.float32):
        img = _image(dtype=dtype)
        assert torch.equal(fn(img, 1.0), img)


def test_jitter_formulas() -> None:
    img = _image(dtype=torch.float32)
    torch.testing.assert_close(adjust_brightness(img, 0.5), img * 0.5)
    grey = 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    torch.testing.assert_close(adjust_contrast(img, 0.0), grey.mean().expand_as(img))
    torch.testing.assert_close(adjust_saturation(img, 0.0), grey.expand_as(img))
    assert adjust_brightness(img, 1.5).max() <= 255
    # zero strengths: the jitter is the identity even when applied
    assert torch.equal(RandomColorJitter(1.0, 0.0, 0.0, 0.0)(img), img)
    jittered = RandomColorJitter(1.0)(img, torch.Generator().manual_seed(0))
    assert jittered.shape == img.shape
    assert not torch.equal(jittered, img)


class _Counter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.mark.parametrize(
    "cls", [RandomCropPaste, RandomLowResolution, RandomColorJitter, RandomHorizontalFlip], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("p", [0.2, 0.7])
def test_application_probability(cls: type[RandomTransform], p: float) -> None:
    counter = _Counter()

    class Counted(cls):  # type: ignore[valid-type, misc]
        def apply(self, img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            counter.calls += 1
            return super().apply(img, generator)

    t = Counted(p)
    g = torch.Generator().manual_seed(1)
    img = _image(size=(8, 8))
    n = 2000
    for _ in range(n):
        t(img, g)
    assert abs(counter.calls / n - p) < 0.04  # about 4 standard deviations at p = 0.2


def test_pipeline_deterministic_with_seed() -> None:
    pipeline = adaface_augmentation(p=0.5)
    imgs = [_image(i) for i in range(30)]
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out1 = [pipeline(x, g1) for x in imgs]
    out2 = [pipeline(x, g2) for x in imgs]
    assert all(torch.equal(a, b) for a, b in zip(out1, out2, strict=True))
    assert all(a.shape == x.shape and a.dtype == torch.uint8 for a, x in zip(out1, imgs, strict=True))
    g3 = torch.Generator().manual_seed(8)
    assert not all(torch.equal(a, pipeline(x, g3)) for a, x in zip(out1, imgs, strict=True))
    assert [type(t).__name__ for t in pipeline.transforms] == [
        "RandomCropPaste",
        "RandomLowResolution",
        "RandomColorJitter",
        "RandomHorizontalFlip",
    ]
    assert "RandomCropPaste(p=0.5)" in repr(pipeline)


@pytest.mark.parametrize(
    "pp",
    [
        Preprocessing(),
        Preprocessing(channel_order="BGR"),
        Preprocessing(channel_order="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ],
)
def test_normalize_formula(pp: Preprocessing) -> None:
    img = _image()
    out = normalize(img, pp)
    assert out.dtype == torch.float32
    assert out.shape == img.shape
    src = img.double().numpy()
    if pp.channel_order == "BGR":
        src = src[::-1]
    expected = np.stack([(src[c] / 255 - pp.mean[c]) / pp.std[c] for c in range(3)])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    batch = torch.stack([img, img])
    torch.testing.assert_close(normalize(batch, pp)[1], out)
    torch.testing.assert_close(Normalize(pp)(img), out)


def test_training_transform() -> None:
    pp = Preprocessing(channel_order="BGR")
    img = _image(size=(112, 112))
    plain = training_transform(pp, augment="none")(img)
    torch.testing.assert_close(plain, normalize(img, pp))
    for augment in ("flip", "adaface"):
        out = training_transform(pp, augment=augment)(img, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
        assert out.shape == (3, 112, 112)
        assert out.dtype == torch.float32
        assert out.min() >= -1
        assert out.max() <= 1
    with pytest.raises(ValueError, match="augment"):
        training_transform(pp, augment="mixup")  # type: ignore[arg-type]


def test_errors() -> None:
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandomHorizontalFlip()(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="interpolations"):
        RandomLowResolution(interpolations=("lanczos",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RGB"):
        normalize(torch.zeros(1, 4, 4), Preprocessing())
    assert isinstance(Compose([]), Compose)
