"""The one bounded image decoder (qualiface.imaging): limits checked from the header, errors naming the input."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from _helpers.hostile import png_claiming
from qualiface import imaging
from qualiface.data.image_folder import ImageDataError, read_image
from qualiface.data.recordio import decode_image as decode_record
from qualiface.errors import InputError
from qualiface.imaging import ImageDecodeError, decode_image, image_size

#: The peak resident size of the process running it, in KiB: VmHWM, not ru_maxrss, which Linux carries over from
#: the parent (a large pytest) across fork and exec.
PEAK_KIB = "peak_kib = lambda: int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"


def _encoded(fmt: str, height: int = 20, width: int = 30, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """An 8x8 JPEG whose SOF0 header is rewritten to declare ``width x height`` (the attack's 731-byte file)."""
    data = bytearray(_encoded("JPEG", 8, 8))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 7] = struct.pack(">H", height)
    data[sof + 7 : sof + 9] = struct.pack(">H", width)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_formats_decode_to_pillows_pixels(fmt):
    data = _encoded(fmt)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rgb = decode_image(data, "x")
    assert rgb.dtype == np.uint8
    assert rgb.shape == (20, 30, 3)
    assert rgb.flags.writeable
    if fmt != "JPEG":  # simplejpeg (libjpeg-turbo) may round differently from Pillow's libjpeg by 1
        np.testing.assert_array_equal(rgb, expected)
    else:
        assert np.abs(rgb.astype(int) - expected).max() <= 2
    np.testing.assert_array_equal(decode_image(data, "x", mode="bgr"), rgb[..., ::-1])
    assert image_size(data, "x") == (30, 20)


def test_grey_and_rgba_become_rgb():
    for mode in ("L", "RGBA", "P"):
        assert decode_image(_encoded("PNG", mode=mode), "x").shape == (20, 30, 3)


@pytest.mark.parametrize(("width", "height"), [(12000, 12000), (65500, 65500)])
def test_a_jpeg_header_over_the_limit_is_refused_before_decoding(monkeypatch, width, height):
    decoded = []
    if imaging._simplejpeg is not None:
        real = imaging._simplejpeg.decode_jpeg
        monkeypatch.setattr(imaging._simplejpeg, "decode_jpeg", lambda *a, **k: decoded.append(1) or real(*a, **k))
    data = _jpeg_claiming(width, height)
    assert len(data) < 1000
    with pytest.raises(ImageDecodeError, match=rf"evil\.jpg: {width}x{height} = .* over the limit of 40,000,000"):
        decode_image(data, "evil.jpg")
    assert decoded == []


@pytest.mark.parametrize(("width", "height"), [(8000, 8000), (20000, 20000), (65500, 65500)])
def test_a_png_bomb_is_refused_naming_the_limit(width, height):
    with pytest.raises(ImageDecodeError, match=r"bomb\.png: .*pixels is over the limit of 40,000,000"):
        decode_image(png_claiming(width, height), "bomb.png")


def test_the_limit_is_the_callers():
    data = _encoded("PNG", 20, 30)
    with pytest.raises(ImageDecodeError, match="600 pixels is over the limit of 599"):
        decode_image(data, "x", max_pixels=599)
    assert decode_image(data, "x", max_pixels=600).shape == (20, 30, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF"])
def test_truncated_images_are_refused(fmt):
    data = _encoded(fmt, 64, 64)
    with pytest.raises(ImageDecodeError, match=r"cut\.img: cannot decode the image \(.*truncated"):
        decode_image(data[: len(data) // 2], "cut.img")


def test_a_jpeg_header_alone_is_refused():
    data = _encoded("JPEG", 64, 64)
    start_of_scan = data.find(b"\xff\xda")
    with pytest.raises(ImageDecodeError, match=r"head\.jpg: cannot decode"):
        decode_image(data[: start_of_scan + 20], "head.jpg")


@pytest.mark.parametrize(
    "data", [b"", b"not an image", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", b"8BPS\x00\x01" + bytes(30)]
)
def test_non_images_and_unsupported_formats_are_input_errors(data):
    with pytest.raises(ImageDecodeError, match=r"^field 'a': ") as info:
        decode_image(data, "field 'a'")
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, ValueError)
    assert "BytesIO" not in str(info.value)  # no object reprs in the one-line message


def test_read_image_names_the_file_and_bounds_its_size(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(20000, 20000))
    with pytest.raises(ImageDataError, match=rf"{path}: .*over the limit"):
        read_image(path)
    monkeypatch.setattr(imaging, "MAX_FILE_BYTES", 10)
    path.write_bytes(_encoded("PNG"))
    with pytest.raises(ImageDataError, match=rf"{path}: the file is over 10 bytes; not read"):
        read_image(path)
    with pytest.raises(ImageDataError, match=rf"{tmp_path / 'missing.png'}: cannot read the file"):
        read_image(tmp_path / "missing.png")


def test_record_payloads_are_named():
    with pytest.raises(ImageDecodeError, match=r"train\.rec key 7: .*over the limit"):
        decode_record(_jpeg_claiming(12000, 12000), what="train.rec key 7")
    with pytest.raises(ImageDecodeError, match=r"record payload of \d+ bytes: .*over the limit"):
        decode_record(png_claiming(20000, 20000))


def test_a_hostile_header_stays_small_in_memory(tmp_path):
    """The attack's files decoded in a fresh process: refused, and the process never grows past 600 MB."""
    (tmp_path / "a.jpg").write_bytes(_jpeg_claiming(65500, 65500))
    (tmp_path / "b.png").write_bytes(png_claiming(65500, 65500))
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from qualiface.imaging import ImageDecodeError, read_image
        {PEAK_KIB}
        for name in ("a.jpg", "b.png"):
            try:
                read_image(Path({str(tmp_path)!r}) / name)
            except ImageDecodeError:
                pass
            else:
                raise SystemExit(name + " decoded")
        print(peak_kib() // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(result.stdout.strip()) < 600


def test_a_decode_at_the_pixel_limit_costs_the_image_and_its_output_only(tmp_path):
    """A 39.6 MP RGBA PNG (within the 40 MP limit): Pillow's 4-byte pixels plus the 3-byte output, about 7 bytes per
    pixel (the whole-image RGB conversion and tobytes buffers made it over 10 before)."""
    path = tmp_path / "large.png"
    Image.fromarray(np.zeros((6000, 6600, 4), np.uint8)).save(path, compress_level=1)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from qualiface.imaging import read_image
        {PEAK_KIB}
        before = peak_kib()
        image = read_image(Path({str(path)!r}))
        assert image.shape == (6000, 6600, 3) and image.flags.writeable
        print((peak_kib() - before) * 1024 / (6000 * 6600))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert float(result.stdout.strip()) < 8.0
