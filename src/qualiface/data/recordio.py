"""MXNet RecordIO (``train.rec`` + ``train.idx`` + ``property``) read and written without MXNet.

Format (protocols.md §1; ``dmlc/dmlc-core: src/recordio.cc``, ``apache/mxnet: python/mxnet/recordio.py``):

* **Framing (§1.1).** A ``.rec`` is a concatenation of chunks ``magic 0xCED7230A (uint32 LE) | lrec (uint32 LE) |
  payload | zero padding to 4 bytes`` with ``lrec = cflag << 29 | length``. A record whose payload holds the magic at
  a 4-byte aligned offset is split there (the 4 magic bytes are dropped) into chunks with cflag 1 (first), 2
  (middle) and 3 (last); the reader re-inserts the magic between chunks. A complete record has cflag 0.
* **Header (§1.2).** Every record payload starts with ``IRHeader`` = ``struct '<IfQQ'`` (flag, label, id, id2),
  24 bytes. ``flag > 0`` means ``flag`` float32 labels follow the header (then ``label`` is 0.0 and ignored).
* **Layouts (§1.4).** *InsightFace*: images at keys ``1..N``, record 0 (flag > 0) holds ``[N+1, N+1+C]`` and the
  identity records ``N+1..N+C`` hold the half-open image key range ``[first, last+1)`` of each class, all with an
  empty image payload. *im2rec*: no header, every key is an image. Detected as arcface_torch does (key 0 with
  ``flag > 0`` means InsightFace, no key 0 or ``flag == 0`` means im2rec), with one refinement: a key-0 record with
  ``flag > 0`` *and an image payload* is an im2rec ``--pack-label`` image (array label), not a header record, since
  header records always have an empty payload (§1.3). arcface_torch would misread such a file.
* **Index (§1.5).** ``<key>\\t<byte offset>\\n`` per record, in write order. When the ``.idx`` is missing the
  reader can rebuild it by a sequential scan (:func:`scan_index`), taking each record's ``IRHeader.id`` as its key
  (the MXNet convention ``id == key``; duplicate ids are an error).

The reader keeps no file handle across pickling or ``fork``: the handle is opened lazily and reopened whenever the
process id changes, so one reader can be shared by many DataLoader workers. Corrupt records are never skipped: a
bad magic, a truncated chunk, a broken cflag sequence, a short header, a missing key or an out-of-range label
raises :class:`RecordIOError` naming the file and the byte offset or key.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
MAX_LENGTH = (1 << 29) - 1
FLOAT32_EXACT_LIMIT = 1 << 24
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

Layout = Literal["insightface", "im2rec"]
LabelLike = float | int | Sequence[float] | np.ndarray


class RecordIOError(ValueError):
    """A corrupt, truncated or inconsistent RecordIO file (the message names the file and offset or key)."""


@dataclass(frozen=True)
class IRHeader:
    """The 24-byte MXNet image record header.

    Attributes:
        flag: 0 for a scalar ``label``, else the number of float32 labels in ``label``.
        label: a Python float (``flag == 0``) or a float32 array of length ``flag``.
        id: record id (by convention the ``.idx`` key).
        id2: high bits of the id; InsightFace's RecBuilder sets it to 1 on record 0.
    """

    flag: int
    label: float | np.ndarray
    id: int
    id2: int = 0

    @property
    def class_label(self) -> float:
        """The class as arcface_torch reads it: the scalar label, or the first element of an array label."""
        if isinstance(self.label, np.ndarray):
            if self.label.size == 0:
                raise RecordIOError(f"record {self.id}: array label is empty")
            return float(self.label[0])
        return float(self.label)


# ----------------------------------------------------------------------------------------------------------------
# Record payload (IRHeader + labels + image bytes)


def pack_record(label: LabelLike, payload: bytes, record_id: int, id2: int = 0) -> bytes:
    """Pack an ``IRHeader`` plus ``payload`` like ``mxnet.recordio.pack``.

    Args:
        label: a number (``flag = 0``) or a sequence/array (``flag = len(label)``, prepended as float32).
        payload: encoded image bytes (may be empty for header and identity records).
        record_id: the ``id`` field (use the ``.idx`` key).
        id2: the ``id2`` field.

    Returns:
        The record payload to be framed.
    """
    if not 0 <= record_id < 1 << 64 or not 0 <= id2 < 1 << 64:
        raise ValueError(f"record id {record_id} / id2 {id2} is not a uint64")
    if isinstance(label, (int, float, np.integer, np.floating)):
        return struct.pack(IR_FORMAT, 0, float(label), record_id, id2) + bytes(payload)
    array = np.asarray(label, dtype="<f4").reshape(-1)
    if array.size == 0:
        raise ValueError(f"record {record_id}: an array label needs at least one element")
    return struct.pack(IR_FORMAT, array.size, 0.0, record_id, id2) + array.tobytes() + bytes(payload)


def unpack_record(record: bytes, *, source: str = "<record>") -> tuple[IRHeader, bytes]:
    """Split a record payload into its :class:`IRHeader` and the image bytes (``mxnet.recordio.unpack``).

    Args:
        record: the reassembled record payload.
        source: text naming the record in error messages (file and key).

    Raises:
        RecordIOError: the record is shorter than its header and label array.
    """
    if len(record) < IR_SIZE:
        raise RecordIOError(f"{source}: record of {len(record)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, record_id, id2 = struct.unpack_from(IR_FORMAT, record)
    if flag == 0:
        return IRHeader(0, float(label), record_id, id2), bytes(record[IR_SIZE:])
    end = IR_SIZE + 4 * flag
    if len(record) < end:
        raise RecordIOError(f"{source}: IRHeader flag {flag} needs {end} bytes, the record has {len(record)}")
    array = np.frombuffer(record, dtype="<f4", count=flag, offset=IR_SIZE).astype(np.float32)
    return IRHeader(flag, array, record_id, id2), bytes(record[end:])


# ----------------------------------------------------------------------------------------------------------------
# Physical framing


def frame_record(payload: bytes) -> bytes:
    """Frame one record as dmlc's ``RecordIOWriter::WriteRecord`` does (cflag split at aligned magic, padding).

    Raises:
        ValueError: the payload is 2^29 bytes or longer.
    """
    size = len(payload)
    if size > MAX_LENGTH:
        raise ValueError(f"RecordIO records must be smaller than 2^29 bytes, got {size}")
    out = bytearray()
    start = 0
    for pos in range(0, size - size % 4, 4):
        if payload[pos : pos + 4] == MAGIC_BYTES:
            out += MAGIC_BYTES + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (pos - start))
            out += payload[start:pos]
            start = pos + 4
    out += MAGIC_BYTES + struct.pack("<I", ((3 if start else 0) << 29) | (size - start))
    out += payload[start:]
    out += b"\0" * ((4 - size % 4) % 4)
    return bytes(out)


def _read_framed(fh: BinaryIO, offset: int, source: str) -> tuple[bytes, int]:
    """Read the record whose first chunk starts at ``offset``; return its payload and the offset after it."""
    fh.seek(offset)
    parts: list[bytes] = []
    pos = offset
    while True:
        head = fh.read(8)
        if len(head) < 8:
            raise RecordIOError(f"{source}: truncated chunk header at byte offset {pos} ({len(head)} of 8 bytes)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{source}: bad magic 0x{magic:08x} at byte offset {pos} (expected 0x{MAGIC:08x})")
        cflag, length = lrec >> 29, lrec & MAX_LENGTH
        if (not parts and cflag not in (0, 1)) or (parts and cflag not in (2, 3)):
            where = "first" if not parts else "continuation"
            raise RecordIOError(f"{source}: invalid cflag {cflag} for a {where} chunk at byte offset {pos}")
        padded = length + (4 - length % 4) % 4
        body = fh.read(padded)
        if len(body) < padded:
            raise RecordIOError(
                f"{source}: truncated record at byte offset {pos}: chunk needs {padded} bytes, {len(body)} remain"
            )
        parts.append(body[:length])
        pos += 8 + padded
        if cflag in (0, 3):
            return MAGIC_BYTES.join(parts), pos


# ----------------------------------------------------------------------------------------------------------------
# Index


def read_idx(idx_path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """Parse a ``.idx`` file into ``(key, byte offset)`` pairs in file order.

    Raises:
        RecordIOError: a malformed line or a duplicate key (naming the file and line number).
    """
    path = Path(idx_path)
    pairs: list[tuple[int, int]] = []
    seen: set[int] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            fields = stripped.split("\t")
            try:
                key, offset = int(fields[0]), int(fields[1])
            except (IndexError, ValueError):
                raise RecordIOError(f"{path}:{lineno}: expected '<key>\\t<offset>', got {stripped!r}") from None
            if len(fields) != 2 or offset < 0:
                raise RecordIOError(f"{path}:{lineno}: expected '<key>\\t<offset>', got {stripped!r}")
            if key in seen:
                raise RecordIOError(f"{path}:{lineno}: duplicate key {key}")
            seen.add(key)
            pairs.append((key, offset))
    return pairs


def scan_index(rec_path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """Rebuild the index of a ``.rec`` by a sequential scan, keyed by each record's ``IRHeader.id``.

    This is what to use when the ``.idx`` is lost. It relies on the MXNet convention that ``id`` equals the
    ``.idx`` key (true for im2rec, RecBuilder and face2rec2 files).

    Raises:
        RecordIOError: a corrupt record anywhere in the file, or two records with the same id.
    """
    path = Path(rec_path)
    size = path.stat().st_size
    pairs: list[tuple[int, int]] = []
    seen: set[int] = set()
    with path.open("rb") as fh:
        pos = 0
        while pos < size:
            record, end = _read_framed(fh, pos, str(path))
            header, _ = unpack_record(record, source=f"{path} (record at byte offset {pos})")
            if header.id in seen:
                raise RecordIOError(f"{path}: duplicate record id {header.id} at byte offset {pos}")
            seen.add(header.id)
            pairs.append((header.id, pos))
            pos = end
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# Reader


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
        layout: ``"insightface"`` or ``"im2rec"`` (protocols.md §1.4).
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
        label = np.asarray(header.label)
        if label.size < 2:
            raise RecordIOError(f"{self.rec_path}: header record 0 has flag {header.flag}, expected >= 2 labels")
        first_identity, end_identity = (int(v) if np.isfinite(v) else -1 for v in label[:2])
        if not 1 <= first_identity <= end_identity:
            raise RecordIOError(
                f"{self.rec_path}: header record 0 label {label.tolist()} is not a range [N+1, N+1+C] with N >= 0"
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

    def offset(self, key: int) -> int:
        """Byte offset of record ``key``.

        Raises:
            KeyError: the key is not in the index (the message names the index file).
        """
        try:
            return self._offsets[key]
        except KeyError:
            where = self.idx_path if self.idx_path is not None else f"the scanned index of {self.rec_path}"
            raise KeyError(f"key {key} not in {where}") from None

    def read_raw(self, key: int) -> bytes:
        """The reassembled payload of record ``key`` (header included)."""
        offset = self.offset(key)
        record, _ = _read_framed(self._file(), offset, f"{self.rec_path} (key {key})")
        return record

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        """Read record ``key`` and return its :class:`IRHeader` and image bytes."""
        return unpack_record(self.read_raw(key), source=f"{self.rec_path} (key {key})")

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
                exact (protocols.md §1.2, derive the ranges from the image labels instead); a range outside the
                image keys.
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
            start, end = int(label[0]), int(label[1])
            if not 1 <= start <= end <= first:
                raise RecordIOError(
                    f"{self.rec_path} (key {key}): identity range [{start}, {end}) out of the image keys [1, {first})"
                )
            ranges.append((start, end))
        return ranges


def decode_image(payload: bytes, mode: Literal["rgb", "bgr"] = "rgb") -> np.ndarray:
    """Decode an encoded image payload to an ``(H, W, 3)`` uint8 array.

    JPEG goes through simplejpeg (libjpeg-turbo, about 2x Pillow's speed here, same pixels: BENCHMARKS.md); other
    formats, and any JPEG simplejpeg refuses, through Pillow.

    Args:
        payload: JPEG/PNG/… bytes from a record.
        mode: ``"rgb"`` (arcface_torch, ``mx.image.imdecode``) or ``"bgr"`` (AdaFace, ``cv2``).

    Raises:
        ValueError: an empty payload (a header or identity record) or bytes Pillow cannot decode.
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("rgb", "bgr"):
        raise ValueError(f"mode must be 'rgb' or 'bgr', got {mode!r}")
    if not payload:
        raise ValueError("empty image payload (a header or identity record has no image)")
    if payload[:2] == b"\xff\xd8" and _simplejpeg is not None:
        try:
            return _simplejpeg.decode_jpeg(payload, colorspace=mode.upper())
        except ValueError:
            pass  # Pillow gives the error message (or decodes what simplejpeg cannot)
    try:
        with Image.open(io.BytesIO(payload)) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image payload of {len(payload)} bytes: {err}") from err
    return np.ascontiguousarray(array[..., ::-1]) if mode == "bgr" else array


try:  # libjpeg-turbo bindings; optional at import so that a broken wheel degrades to Pillow
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - it is a dependency
    _simplejpeg = None


# ----------------------------------------------------------------------------------------------------------------
# Writer


class RecordIOWriter:
    """Write framed records to a ``.rec`` and their ``(key, offset)`` lines to a ``.idx`` (``MXIndexedRecordIO``).

    Args:
        rec_path: the ``.rec`` file to create (truncated if it exists).
        idx_path: the ``.idx`` file to create.
    """

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str]) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        self._rec = self.rec_path.open("wb")
        self._idx = self.idx_path.open("w", encoding="utf-8", newline="\n")
        self._keys: set[int] = set()

    def write_raw(self, key: int, record: bytes) -> int:
        """Frame ``record`` (header already packed), append it and its index line; return its byte offset.

        Raises:
            ValueError: a duplicate or negative key, or a record of 2^29 bytes or more.
        """
        if key < 0:
            raise ValueError(f"{self.idx_path}: key {key} must be non-negative")
        if key in self._keys:
            raise ValueError(f"{self.idx_path}: duplicate key {key}")
        offset = self._rec.tell()
        self._rec.write(frame_record(record))
        self._idx.write(f"{key}\t{offset}\n")
        self._keys.add(key)
        return offset

    def write(self, key: int, label: LabelLike, payload: bytes = b"", id2: int = 0) -> int:
        """Pack ``IRHeader(flag, label, id=key, id2)`` + ``payload`` and write it under ``key``."""
        return self.write_raw(key, pack_record(label, payload, key, id2))

    def close(self) -> None:
        """Flush and close both files."""
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PackSummary:
    """What :func:`pack_image_folder` wrote."""

    rec_path: Path
    idx_path: Path
    property_path: Path
    num_images: int
    num_classes: int
    class_names: tuple[str, ...]


def _identity_images(root: Path) -> list[tuple[str, list[Path]]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: no identity subfolders")
    identities = []
    for folder in folders:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise ValueError(f"{folder}: empty identity folder (no {', '.join(sorted(IMAGE_EXTENSIONS))} files)")
        identities.append((folder.name, files))
    return identities


def pack_image_folder(
    image_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    rec_name: str = "train.rec",
) -> PackSummary:
    """Pack ``image_root/<identity>/<image>`` into ``out_dir/train.rec``, ``train.idx``, ``property``.

    ``rec_name`` renames the pair (``name.rec`` + ``name.idx``). The files are written under temporary names and
    renamed at the end, so a failed pack leaves no half-written ``.rec`` behind.

    Layout: InsightFace style, as ``RecBuilder`` writes it (protocols.md §1.4). Identity folders are sorted by
    name and get classes ``0..C-1``; files within a folder are sorted by name. Images get keys ``1..N`` with a
    scalar label (``flag = 0``) and their file bytes verbatim (no re-encoding: JPEG stays JPEG, PNG stays PNG).
    Then identity records ``N+1..N+C`` with ``label = [first_key, last_key + 1]``, then the header record 0 with
    ``label = [N+1, N+1+C]`` and ``id2 = 1``. ``property`` is ``"C,H,W"`` with the size of the first image.
    Hidden files and files with other extensions are ignored.

    Raises:
        ValueError: no identity folders, an empty identity folder, an unreadable image, or more than 2^24 records
            (float32 ranges would not be exact).
        FileExistsError: ``train.rec`` exists and ``overwrite`` is false.
    """
    root, out = Path(image_root), Path(out_dir)
    identities = _identity_images(root)
    num_images = sum(len(files) for _, files in identities)
    num_classes = len(identities)
    if num_images + 1 + num_classes > FLOAT32_EXACT_LIMIT:
        raise ValueError(f"{root}: {num_images} images + {num_classes} classes exceed the float32-exact 2^24 keys")
    out.mkdir(parents=True, exist_ok=True)
    if not rec_name.endswith(".rec"):
        raise ValueError(f"rec_name must end in .rec, got {rec_name!r}")
    rec_path, prop_path = out / rec_name, out / "property"
    idx_path = rec_path.with_suffix(".idx")
    if rec_path.exists() and not overwrite:
        raise FileExistsError(f"{rec_path} exists (pass overwrite=True to replace it)")
    tmp_rec, tmp_idx = rec_path.with_name(rec_path.name + ".tmp"), idx_path.with_name(idx_path.name + ".tmp")
    try:
        size = _write_pack(identities, num_images, tmp_rec, tmp_idx)
    except BaseException:
        tmp_rec.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    os.replace(tmp_rec, rec_path)
    os.replace(tmp_idx, idx_path)
    prop_path.write_text(f"{num_classes},{size[0]},{size[1]}\n", encoding="utf-8")
    return PackSummary(rec_path, idx_path, prop_path, num_images, num_classes, tuple(name for name, _ in identities))


def _write_pack(
    identities: list[tuple[str, list[Path]]], num_images: int, rec_path: Path, idx_path: Path
) -> tuple[int, int]:
    """Write the records of :func:`pack_image_folder`; returns the (height, width) of the first image."""
    from PIL import Image, UnidentifiedImageError

    num_classes = len(identities)
    size: tuple[int, int] | None = None
    ranges = []
    key = 1
    with RecordIOWriter(rec_path, idx_path) as writer:
        for cls, (_, files) in enumerate(identities):
            start = key
            for file in files:
                data = file.read_bytes()
                try:
                    with Image.open(io.BytesIO(data)) as img:
                        size = size or (img.height, img.width)
                except (UnidentifiedImageError, OSError) as err:
                    raise ValueError(f"{file}: not a readable image: {err}") from err
                writer.write(key, cls, data)
                key += 1
            ranges.append((start, key))
        for start, end in ranges:
            writer.write(key, [start, end])
            key += 1
        writer.write(0, [num_images + 1, num_images + 1 + num_classes], id2=1)
    assert size is not None
    return size


def read_property(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Read a ``property`` file ``"<num_classes>,<height>,<width>"`` (protocols.md §1.6).

    Raises:
        ValueError: not three comma-separated integers.
    """
    text = Path(path).read_text(encoding="utf-8").strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{path}: expected '<num_classes>,<height>,<width>', got {text!r}") from None
    return num_classes, height, width
