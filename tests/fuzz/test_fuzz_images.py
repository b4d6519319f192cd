"""Property-based tests of the one image decoder: mutated and random bytes give a bounded RGB image or an
ImageDecodeError naming the input, nothing else (a few dozen examples in the default run, thousands under
``-m fuzz``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _helpers.fuzz import FAST, LONG
from qualiface.imaging import ImageDecodeError, decode_image

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
MAX_PIXELS = 1 << 16


def _seed_image(fmt: str) -> bytes:
    pixels = np.random.default_rng(len(fmt)).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


SEEDS = {fmt: _seed_image(fmt) for fmt in FORMATS}


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image of a random format with a few random edits: byte flips, a cut, an insertion."""
    data = bytearray(SEEDS[draw(st.sampled_from(FORMATS))])
    for _ in range(draw(st.integers(1, 6))):
        edit = draw(st.sampled_from(("flip", "cut", "insert", "header")))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if edit == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[position:]
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif data:  # the header, where the dimensions and the chunk sizes live
            data[min(position, 40)] = draw(st.integers(0, 255))
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzz.img", max_pixels=MAX_PIXELS)
    except ImageDecodeError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.startswith("fuzz.img: ")
        assert "\n" not in message
        return
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS


@FAST
@given(mutated_images())
def test_mutated_images(data: bytes) -> None:
    _check(data)


@FAST
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@pytest.mark.fuzz
@LONG
@given(mutated_images())
def test_mutated_images_long(data: bytes) -> None:
    _check(data)
