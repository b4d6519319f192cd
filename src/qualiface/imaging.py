"""One bounded image decoder for every path: photos, image folders, RecordIO records, ``.bin`` sets, the server.

:func:`decode_image` reads the image's dimensions from its header, refuses it when ``width x height`` is over
``max_pixels`` *before* any pixel is decoded (a 731-byte JPEG can claim 65500 x 65500 = 12 GiB of pixels), refuses
truncated files (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off) and formats outside :data:`IMAGE_FORMATS`, and
raises :class:`ImageDecodeError` naming the input (a file, a record key, a request field) for all of them. The
memory of one decode is bounded by about ``4 x 4 x max_pixels`` bytes (the largest decoded mode, its RGB
conversion and the array), whatever the input claims.

JPEG goes through simplejpeg (libjpeg-turbo, about 2x Pillow's speed, same pixels: BENCHMARKS.md) after the same
header check; anything simplejpeg refuses goes through Pillow, which gives the error message.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from qualiface.errors import InputError

if TYPE_CHECKING:
    import PIL.Image

#: The default pixel limit (``width x height``): 40 megapixels, a 48 MP phone photo needs ``max_pixels`` raised.
DEFAULT_MAX_PIXELS = 40_000_000
#: The formats Pillow may open; others (EPS, PSD, ICNS, ...) are refused without running their plugins.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # JPEG includes MPO

#: The largest image file read (bytes); a larger file is refused before it is read.
MAX_FILE_BYTES = 256 * 1024 * 1024

Mode = Literal["rgb", "bgr"]


class ImageDecodeError(InputError):
    """An image that cannot be decoded within the limits; :attr:`what` names it, :attr:`reason` says why."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


def check_pixels(width: int, height: int, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse ``width x height`` when it is not positive or over ``max_pixels`` (:class:`ImageDecodeError`)."""
    if width <= 0 or height <= 0:
        raise ImageDecodeError(what, f"the header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(
            what,
            f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
            f"(a decompression bomb, or raise the pixel limit)",
        )


def image_size(data: bytes, what: str, formats: tuple[str, ...] = IMAGE_FORMATS) -> tuple[int, int]:
    """``(width, height)`` from the header of an encoded image, without decoding its pixels."""
    from PIL import Image

    if not data:
        raise ImageDecodeError(what, "empty (no image bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings (bomb, skipped TIFF tags): the errors are ours
            with _open(data, formats) as image:
                width, height = image.size
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise _worded(exc, what, DEFAULT_MAX_PIXELS, formats) from None
    return int(width), int(height)


def decode_image(
    data: bytes,
    what: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: Mode = "rgb",
    formats: tuple[str, ...] = IMAGE_FORMATS,
) -> np.ndarray:
    """Decode an encoded image to a writable ``uint8 (H, W, 3)`` array, RGB or BGR, within ``max_pixels``.

    Args:
        data: the encoded bytes (JPEG, PNG, ...).
        what: how errors name the input: a path, ``"train.rec key 17"``, ``"field 'a'"``.
        max_pixels: the largest ``width x height`` accepted; checked from the header before decoding.
        mode: ``"rgb"`` (Pillow, arcface_torch's ``mx.image.imdecode``) or ``"bgr"`` (OpenCV's order, AdaFace).
        formats: the Pillow formats accepted.

    Raises:
        ImageDecodeError: empty, not an image, a format outside ``formats``, over the pixel limit, truncated or
            corrupt.
        ValueError: a bad ``mode`` (a programming error, not the input's).
    """
    if mode not in ("rgb", "bgr"):
        raise ValueError(f"mode must be 'rgb' or 'bgr', got {mode!r}")
    if not data:
        raise ImageDecodeError(what, "empty (no image bytes)")
    if data[:2] == b"\xff\xd8" and _simplejpeg is not None and "JPEG" in formats:
        decoded = _decode_jpeg(data, what, max_pixels, mode)
        if decoded is not None:
            return decoded
    return _decode_pillow(data, what, max_pixels, mode, formats)


def read_image_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of an image file, refused (:class:`ImageDecodeError` naming it) when unreadable or larger than
    ``max_bytes`` (default :data:`MAX_FILE_BYTES`)."""
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(str(path), f"cannot read the file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageDecodeError(str(path), f"the file is over {max_bytes:,} bytes; not read")
    return data


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, mode: Mode = "rgb") -> np.ndarray:
    """Read and decode an image file within the limits (:func:`read_image_bytes`, :func:`decode_image`)."""
    return decode_image(read_image_bytes(path), str(path), max_pixels=max_pixels, mode=mode)


#: The kinds of failure :func:`failure_kind` tells apart, each with the words that identify it in a message.
_FAILURE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("over the pixel limit", ("over the limit of",)),
    ("file too large", ("bytes; not read",)),
    ("unreadable file", ("cannot read",)),
    ("empty", ("empty",)),
    ("truncated", ("truncated",)),
    ("not an image", ("not an image", "not a readable image")),
)


def failure_kind(message: str) -> str:
    """A short class of a decoder failure message, for counts in a run's summary (``"truncated"``, ...)."""
    for kind, words in _FAILURE_KINDS:
        if any(word in message for word in words):
            return kind
    return "undecodable"


def _decode_jpeg(data: bytes, what: str, max_pixels: int, mode: Mode) -> np.ndarray | None:
    """simplejpeg's decode after its header check; ``None`` to let Pillow decode (or word the error)."""
    assert _simplejpeg is not None
    try:
        height, width, _, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    check_pixels(int(width), int(height), what, max_pixels)
    try:
        decoded: np.ndarray = _simplejpeg.decode_jpeg(data, colorspace=mode.upper(), strict=True)
    except ValueError:
        return None
    return decoded


def _decode_pillow(data: bytes, what: str, max_pixels: int, mode: Mode, formats: tuple[str, ...]) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # the pixel limit is ours (checked below, before load); Pillow's own bomb check is a second guard
            warnings.simplefilter("ignore")  # Pillow's warnings (bomb, skipped TIFF tags): the errors are ours
            with _open(data, formats) as image:
                width, height = image.size
                check_pixels(int(width), int(height), what, max_pixels)
                image.load()
                return _pixels(image, mode)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise _worded(exc, what, max_pixels, formats) from None


#: Pixels converted per strip by :func:`_pixels` (about 1 MP: a few MB of temporaries, whatever the image size).
_STRIP_PIXELS = 1 << 20


def _pixels(image: PIL.Image.Image, mode: Mode) -> np.ndarray:
    """A decoded Pillow image as a writable ``uint8 (H, W, 3)`` array, converted strip by strip into the output:
    the memory is the decoded image plus the output (no whole-image RGB copy, no ``tobytes`` buffers)."""
    width, height = image.size
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        if strip.mode != "RGB":
            strip = strip.convert("RGB")
        values = np.asarray(strip)
        out[top : top + values.shape[0]] = values[..., ::-1] if mode == "bgr" else values
    return out


def _open(data: bytes, formats: tuple[str, ...]) -> PIL.Image.Image:
    """Pillow's lazy open (header only) restricted to ``formats``; every plugin is registered first."""
    from PIL import Image

    Image.init()  # registers TIFF, WEBP, ... (idempotent, cheap after the first call)
    return Image.open(io.BytesIO(data), formats=list(formats))


def _worded(exc: BaseException, what: str, max_pixels: int, formats: tuple[str, ...]) -> ImageDecodeError:
    """Pillow's failure as one line naming ``what`` (no object reprs, the pixel limit in our words)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, Image.DecompressionBombError):  # Pillow's own guard fired while opening the header
        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{int(found.group(1)):,} pixels" if found else "its declared size"
        return ImageDecodeError(
            what, f"{declared} is over the limit of {max_pixels:,} (a decompression bomb, or raise the pixel limit)"
        )
    if isinstance(exc, UnidentifiedImageError):
        return ImageDecodeError(what, f"not an image in a supported format ({', '.join(formats)})")
    return ImageDecodeError(what, f"cannot decode the image ({_describe(exc)})")


def _describe(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


try:  # libjpeg-turbo bindings; optional at import so that a broken wheel degrades to Pillow
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - it is a dependency
    _simplejpeg = None
