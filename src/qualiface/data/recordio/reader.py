"""Random-access reading of an MXNet ``.rec`` through its ``.idx``, as a dataset of ``(image bytes, class)``.

The format (framing, ``IRHeader``, the InsightFace and im2rec layouts, the index) is described in
:mod:`qualiface.data.recordio.format` and ``docs/formats.md``, section 'RecordIO'.

The reader keeps no file handle across pickling or ``fork``: the handle is opened lazily and reopened whenever the
process id changes, so one reader can be shared by many DataLoader workers. Corrupt records are never skipped: a
bad magic, a truncated chunk, a broken cflag sequence, a short header, a missing key or an out-of-range label
raises :class:`~qualiface.data.recordio.format.RecordIOError` naming the file and the byte offset or key.
:func:`decode_image` turns a record's image bytes into pixels.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from qualiface import imaging
from qualiface.data.recordio.format import (
    FLOAT32_EXACT_LIMIT,
    IRHeader,
    RecordIOError,
    read_framed,
    read_idx,
    scan_index,
    unpack_record,
)
from qualiface.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError

Layout = Literal["insightface", "im2rec"]


class RecordIOReader:
    """Random-access reader of an MXNet ``.rec`` through its ``.idx``; safe to share with DataLoader workers.

    ``len(reader)`` and ``reader[i]`` address the *images* (``image_keys``), so the reader can back a
    ``torch.utils.data.Dataset`` directly; :meth:`read` addresses any record by its ``.idx`` key.

    Args:
        rec_path: the ``.rec`` file.
        idx_path: the ``.idx`` file. ``None`` uses the sibling ``<stem>.idx`` when it exists and otherwise
            rebuilds the index with :func:`scan_index` (a full pass over the file). An explicit path that does
            not exist raises ``FileNotFoundError``.

    Attributes:
        keys: all record keys in ``.idx`` file order.
        layout: ``"insightface"`` or ``"im2rec"`` (``docs/formats.md``, RecordIO: layouts).
        image_keys: the keys of the image records, in the order arcface_torch uses.
        header0: the InsightFace header record (``None`` for im2rec).
        num_classes: ``C`` from the header record (InsightFace), else ``None``.
    """

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str] | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        if idx_path is None:
            sibling = self.rec_path.with_suffix(".idx")
            self.idx_path: Path | None = sibling if sibling.is_file() else None
        else:
            self.idx_path = Path(idx_path)
            if not self.idx_path.is_file():
                raise FileNotFoundError(f"RecordIO index not found: {self.idx_path}")
        pairs = read_idx(self.idx_path) if self.idx_path is not None else scan_index(self.rec_path)
        self.keys: list[int] = [key for key, _ in pairs]
        self._offsets: dict[int, int] = dict(pairs)
        self._fh: BinaryIO | None = None
        self._pid: int | None = None
        self.header0: IRHeader | None = None
        self.num_classes: int | None = None
        self.layout: Layout = "im2rec"
        self.image_keys: list[int] = list(self.keys)
        if 0 in self._offsets:
            header, payload = self.read(0)
            if header.flag > 0 and not payload:
                self._init_insightface(header)

    def _init_insightface(self, header: IRHeader) -> None:
        """Take the layout from header record 0 once its claims are checked against the index: ``N`` images at keys
        ``1..N`` and ``C`` identity records at ``N+1..N+C`` must all be in the index (checked before any list
        sized by them is built)."""
        label = np.asarray(header.label)
        if label.size < 2:
            raise RecordIOError(f"{self.rec_path}: header record 0 has flag {header.flag}, expected >= 2 labels")
        first_identity, end_identity = (int(v) if np.isfinite(v) and v == int(v) else -1 for v in label[:2])
        if not 1 <= first_identity <= end_identity:
            raise RecordIOError(
                f"{self.rec_path}: header record 0 label {label.tolist()} is not a range [N+1, N+1+C] with N >= 0"
            )
        images, classes = first_identity - 1, end_identity - first_identity
        if images + classes + 1 > len(self.keys):
            raise RecordIOError(
                f"{self.rec_path} (key 0): header record 0 claims {images} images and {classes} identity records "
                f"(keys 1..{end_identity - 1}), but {self._index_name} holds {len(self.keys)} records"
            )
        missing = next((key for key in range(1, end_identity) if key not in self._offsets), None)
        if missing is not None:
            what = "image" if missing < first_identity else "identity record"
            raise RecordIOError(
                f"{self.rec_path} (key 0): header record 0 claims keys 1..{end_identity - 1}, but {what} key "
                f"{missing} is not in {self._index_name}"
            )
        self.layout = "insightface"
        self.header0 = header
        self.num_classes = end_identity - first_identity
        self.image_keys = list(range(1, first_identity))

    # -- file handle management (one handle per process, none across pickling) --

    def _file(self) -> BinaryIO:
        pid = os.getpid()
        if self._fh is None or self._pid != pid:
            self._fh = self.rec_path.open("rb")
            self._pid = pid
        return self._fh

    def close(self) -> None:
        """Close this process's file handle (it is reopened on the next read)."""
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None
        self._pid = None

    def __del__(self) -> None:
        """A reader dropped without :meth:`close` (the trainer's, at the end of a run) does not leak its handle."""
        with contextlib.suppress(Exception):  # interpreter shutdown: attributes may already be gone
            self.close()

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- records --

    @property
    def _index_name(self) -> str:
        return str(self.idx_path) if self.idx_path is not None else f"the scanned index of {self.rec_path}"

    def offset(self, key: int) -> int:
        """Byte offset of record ``key``.

        Raises:
            KeyError: the key is not in the index (the message names the index file).
        """
        try:
            return self._offsets[key]
        except KeyError:
            raise KeyError(f"key {key} not in {self._index_name}") from None

    def read_raw(self, key: int) -> bytes:
        """The reassembled payload of record ``key`` (header included)."""
        offset = self.offset(key)
        record, _ = read_framed(self._file(), offset, f"{self.rec_path} (key {key})")
        return record

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        """Read record ``key`` and return its :class:`IRHeader` and image bytes.

        Raises:
            RecordIOError: a corrupt record, or one whose id is not ``key`` (the index does not belong to this
                ``.rec``, or was shuffled: every MXNet writer stores the key as the id).
        """
        header, payload = unpack_record(self.read_raw(key), source=f"{self.rec_path} (key {key})")
        if header.id != key:
            raise RecordIOError(
                f"{self.rec_path} (key {key}): the record at byte offset {self._offsets[key]} has id {header.id}, "
                f"not its key {key} in {self._index_name}: the index does not belong to this file (delete it to "
                f"rebuild it from the records)"
            )
        return header, payload

    # -- images and labels --

    def __len__(self) -> int:
        return len(self.image_keys)

    def class_of(self, header: IRHeader, key: int) -> int:
        """Integer class of an image record; checks it is a non-negative integer below ``num_classes``.

        Raises:
            RecordIOError: the label is not an integer or out of ``[0, num_classes)`` (naming file and key).
        """
        value = header.class_label
        if not math.isfinite(value) or value != int(value) or value < 0:
            raise RecordIOError(f"{self.rec_path} (key {key}): label {value} is not a non-negative integer class")
        cls = int(value)
        if self.num_classes is not None and cls >= self.num_classes:
            raise RecordIOError(
                f"{self.rec_path} (key {key}): label {cls} out of range [0, {self.num_classes}) given by record 0"
            )
        return cls

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        """Image ``index`` (position in ``image_keys``) as ``(encoded image bytes, class)``."""
        key = self.image_keys[index]
        header, payload = self.read(key)
        return payload, self.class_of(header, key)

    def label(self, index: int) -> int:
        """Class of image ``index`` (reads that record's header)."""
        key = self.image_keys[index]
        header, _ = self.read(key)
        return self.class_of(header, key)

    def identity_ranges(self) -> list[tuple[int, int]]:
        """Half-open image key ranges ``[first, end)`` per class, from the InsightFace identity records.

        Raises:
            RecordIOError: im2rec layout (no identity records); keys beyond 2^24 where the float32 ranges are not
                exact (``docs/formats.md``, RecordIO: header; derive the ranges from the image labels instead); a
                range outside the image keys.
        """
        if self.header0 is None or self.num_classes is None:
            raise RecordIOError(f"{self.rec_path}: im2rec layout has no identity records")
        first = len(self.image_keys) + 1
        if first + self.num_classes > FLOAT32_EXACT_LIMIT:
            raise RecordIOError(
                f"{self.rec_path}: identity ranges beyond 2^24 are not exact in float32; derive them from image labels"
            )
        ranges = []
        for key in range(first, first + self.num_classes):
            header, _ = self.read(key)
            label = np.asarray(header.label).reshape(-1)
            if header.flag < 2 or label.size < 2:
                raise RecordIOError(f"{self.rec_path} (key {key}): identity record needs a 2-element label")
            if not all(math.isfinite(v) and v == int(v) for v in label[:2].tolist()):
                raise RecordIOError(
                    f"{self.rec_path} (key {key}): identity range {label[:2].tolist()} is not two integer keys"
                )
            start, end = int(label[0]), int(label[1])
            if not 1 <= start <= end <= first:
                raise RecordIOError(
                    f"{self.rec_path} (key {key}): identity range [{start}, {end}) out of the image keys [1, {first})"
                )
            ranges.append((start, end))
        return ranges


def decode_image(
    payload: bytes,
    mode: Literal["rgb", "bgr"] = "rgb",
    *,
    what: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode a record's image payload to an ``(H, W, 3)`` uint8 array with the bounded decoder
    (:func:`qualiface.imaging.decode_image`: JPEG through simplejpeg, the pixel limit checked from the header).

    Args:
        payload: JPEG/PNG/… bytes from a record.
        mode: ``"rgb"`` (arcface_torch, ``mx.image.imdecode``) or ``"bgr"`` (AdaFace, ``cv2``).
        what: how an error names the record (e.g. ``"train.rec key 17"``); default ``"record payload"``.
        max_pixels: the largest ``width x height`` decoded.

    Raises:
        ImageDecodeError: an empty payload (a header or identity record has no image), bytes that are not an image,
            over the pixel limit, truncated or corrupt (a ``ValueError``).
    """
    if not payload:
        raise ImageDecodeError(
            what or "record payload", "empty image payload (a header or identity record has no image)"
        )
    return imaging.decode_image(
        payload, what or f"record payload of {len(payload)} bytes", mode=mode, max_pixels=max_pixels
    )
