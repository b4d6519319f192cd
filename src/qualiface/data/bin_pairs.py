"""insightface verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, …) read without running pickles.

Format (docs/formats.md, 'Verification .bin files';
``deepinsight/insightface: recognition/arcface_torch/eval/verification.py: load_bin``):
a pickle of the 2-tuple ``(bins, issame)``; ``bins`` holds ``2P`` encoded images (element ``2i`` and ``2i+1``
form pair ``i``), each a ``bytes`` object or a ``uint8`` array of shape ``(n, 1)`` (``cv2.imencode`` output, as
in the genuine ``small_lfw.bin``) or ``(n,)``; ``issame`` holds ``P`` bools. Pairs are stored fold after fold, so
never shuffle them.

The pickle is read by a restricted unpickler that resolves only the globals a genuine pack needs, NumPy's array
reconstruction: ``numpy.core.multiarray._reconstruct`` (NumPy 1.x) / ``numpy._core.multiarray._reconstruct``
(2.x), ``numpy.ndarray`` and ``numpy.dtype``, plus ``numpy[._]core.numeric._frombuffer``, which NumPy uses for
arrays under pickle protocol 5 (``pickle.HIGHEST_PROTOCOL`` since Python 3.8, which the insightface builders
pass). Anything else (``os.system``, ``builtins.eval``, …) is refused with a ``ValueError`` before it can run.
Python-2 packs that fail with ``UnicodeDecodeError`` are read again with ``encoding="bytes"``.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from qualiface.errors import InputError
from qualiface.imaging import decode_image, image_size

_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
_PACK_FORMATS = ("JPEG", "PNG")


class UnsafePickleError(InputError):
    """A pack asked for a global outside the allowed NumPy reconstruction path (never executed)."""


def _numpy_global(module: str, name: str) -> Any:
    if name == "ndarray":
        return np.ndarray
    if name == "dtype":
        return np.dtype
    submodule = module.rsplit(".", 1)[1]  # "multiarray" or "numeric"
    try:  # the NumPy 2 location (importing numpy.core there warns)
        return getattr(importlib.import_module(f"numpy._core.{submodule}"), name)
    except (ImportError, AttributeError):  # pragma: no cover - NumPy 1.x
        return getattr(importlib.import_module(f"numpy.core.{submodule}"), name)


class _PackUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only :data:`_ALLOWED_GLOBALS`."""

    def __init__(self, file: io.BytesIO, *, source: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _numpy_global(module, name)
        shown = f"{module}.{name}"
        shown = shown if shown.isprintable() and len(shown) <= 200 else repr(shown[:200])  # one line, whatever it is
        raise UnsafePickleError(
            f"{self.source}: refused to load the global {shown}; a verification pack only holds encoded "
            "images and bools (NumPy arrays at most), so this file is not a genuine pack"
        )


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with the restricted unpickler; ``encoding="bytes"`` retry for Python-2 pickles.

    Raises:
        ValueError: a refused global (:class:`UnsafePickleError`), or a truncated or corrupt pickle.
    """
    for encoding in ("ASCII", "bytes"):
        try:
            return _PackUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
        except UnicodeDecodeError:
            continue
        except UnsafePickleError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            MemoryError,
            OverflowError,
        ) as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__  # one line: the text may quote the file
            raise ValueError(f"{source}: not a readable pickle (truncated or corrupt?): {reason}") from None
    raise ValueError(f"{source}: the pickle holds text that decodes neither as ASCII nor as bytes")


class LazyImages:
    """A lazily decoded image list: ``images[i]`` is RGB ``uint8`` ``(H, W, 3)``, ``images[a:b]`` a stack
    ``(n, H, W, 3)`` (a NumPy-like source for :func:`qualiface.models.embed_images`).
    Subclasses give ``__len__``, :meth:`decode` and :meth:`describe`; errors name the element."""

    def __len__(self) -> int:
        raise NotImplementedError

    def decode(self, index: int) -> np.ndarray:
        """Element ``index`` decoded to RGB ``uint8`` ``(H, W, 3)``."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where element ``index`` comes from, for messages."""
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> np.ndarray: ...
    def __getitem__(self, index: int | slice) -> np.ndarray:
        if not isinstance(index, slice):
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range ({len(self)} images)")
            return self.decode(index % len(self))
        indices = range(*index.indices(len(self)))
        images = [self.decode(i) for i in indices]
        if not images:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        for i, image in zip(indices, images, strict=True):
            if image.shape != images[0].shape:
                raise ValueError(
                    f"{self.describe(i)} is {image.shape[1]}x{image.shape[0]} pixels but {self.describe(indices[0])} "
                    f"is {images[0].shape[1]}x{images[0].shape[0]}; the images must share a size"
                )
        return np.stack(images)


class EncodedImages(LazyImages):
    """Encoded images in memory (the elements of a pack), decoded on access."""

    def __init__(self, blobs: Sequence[bytes], source: str) -> None:
        self.blobs = blobs
        self.source = source

    def __len__(self) -> int:
        return len(self.blobs)

    def describe(self, index: int) -> str:
        """``"<file>: element <index>"``."""
        return f"{self.source}: element {index}"

    def decode(self, index: int) -> np.ndarray:
        """Element ``index`` decoded to RGB ``uint8`` ``(H, W, 3)``."""
        return decode_image(self.blobs[index], self.describe(index), formats=_PACK_FORMATS)


@dataclass(frozen=True)
class VerificationPairs:
    """A verification pack: ``images`` (``2P``, pair ``i`` = elements ``2i`` and ``2i+1``), ``issame`` ``(P,)``."""

    images: EncodedImages
    issame: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.issame.shape[0])

    @property
    def n_pairs(self) -> int:
        """Number of pairs ``P``."""
        return len(self)


def _as_bytes(element: Any, index: int, source: str) -> bytes:
    if isinstance(element, bytes | bytearray):
        data = bytes(element)
    elif isinstance(element, np.ndarray):
        if element.dtype != np.uint8 or not (element.ndim == 1 or (element.ndim == 2 and element.shape[1] == 1)):
            raise ValueError(
                f"{source}: element {index} is an array of dtype {element.dtype} and shape {element.shape}; "
                "expected encoded image bytes (a uint8 array of shape (n,) or (n, 1))"
            )
        data = element.tobytes()
    else:
        raise ValueError(f"{source}: element {index} is a {type(element).__name__}; expected bytes or a uint8 array")
    if not data:
        raise ValueError(f"{source}: element {index} is empty")
    return data


def _as_issame(values: Any, source: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "biu":
            raise ValueError(f"{source}: issame is an array of dtype {values.dtype}, shape {values.shape}")
        values = values.tolist()
    if not isinstance(values, list | tuple):
        raise ValueError(f"{source}: issame is a {type(values).__name__}; expected a list of bools")
    out = np.empty(len(values), dtype=bool)
    for i, value in enumerate(values):
        if isinstance(value, bool | np.bool_) or (isinstance(value, int | np.integer) and value in (0, 1)):
            out[i] = bool(value)
        else:
            raise ValueError(f"{source}: issame[{i}] is {value!r}; expected a bool")
    return out


def load_bin(path: str | Path, *, check_images: bool = True) -> VerificationPairs:
    """Read an insightface verification ``.bin`` pack safely (module docstring); images stay encoded.

    Args:
        path: the ``.bin`` file.
        check_images: parse every image header now (cheap; a full decode happens on access), so that a
            non-image element is reported at load time with its index.

    Raises:
        ValueError: missing file, refused pickle global, truncated/corrupt pickle, wrong structure
            (not ``(bins, issame)``, ``len(bins) != 2 * len(issame)``, an element that is not bytes or a uint8
            array ``(n,)`` / ``(n, 1)``, an element that is not a JPEG/PNG image), each naming the file and the
            element index.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ValueError(f"{source}: no such file")
    obj = safe_unpickle(path.read_bytes(), source)
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        kind = f"a {len(obj)}-element {type(obj).__name__}" if isinstance(obj, tuple | list) else type(obj).__name__
        raise ValueError(f"{source}: expected a pickled 2-tuple (bins, issame), got {kind}")
    bins, issame_raw = obj
    if not isinstance(bins, list | tuple):
        raise ValueError(f"{source}: bins is a {type(bins).__name__}; expected a list of encoded images")
    issame = _as_issame(issame_raw, source)
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{source}: {len(bins)} images for {len(issame)} pairs; a pack holds exactly 2 per pair")
    if not len(issame):
        raise ValueError(f"{source}: the pack holds no pairs")
    blobs = [_as_bytes(element, i, source) for i, element in enumerate(bins)]
    if check_images:
        for i, blob in enumerate(blobs):
            image_size(blob, f"{source}: element {i}", _PACK_FORMATS)
    return VerificationPairs(images=EncodedImages(blobs, source), issame=issame, source=source)
