"""The MXNet RecordIO binary format (``train.rec`` + ``train.idx``): framing, ``IRHeader``, index, errors.

Described in the project's docs, ``docs/formats.md``, section 'RecordIO'; the sources are
``dmlc/dmlc-core: src/recordio.cc`` and ``apache/mxnet: python/mxnet/recordio.py``:

* **Framing.** A ``.rec`` is a concatenation of chunks ``magic 0xCED7230A (uint32 LE) | lrec (uint32 LE) |
  payload | zero padding to 4 bytes`` with ``lrec = cflag << 29 | length``. A record whose payload holds the magic at
  a 4-byte aligned offset is split there (the 4 magic bytes are dropped) into chunks with cflag 1 (first), 2
  (middle) and 3 (last); the reader re-inserts the magic between chunks. A complete record has cflag 0.
* **Header.** Every record payload starts with ``IRHeader`` = ``struct '<IfQQ'`` (flag, label, id, id2),
  24 bytes. ``flag > 0`` means ``flag`` float32 labels follow the header (then ``label`` is 0.0 and ignored).
  Float32 labels hold integers exactly only up to 2^24 (:data:`FLOAT32_EXACT_LIMIT`).
* **Layouts.** *InsightFace*: images at keys ``1..N``, record 0 (flag > 0) holds ``[N+1, N+1+C]`` and the
  identity records ``N+1..N+C`` hold the half-open image key range ``[first, last+1)`` of each class, all with an
  empty image payload. *im2rec*: no header, every key is an image. Detected as arcface_torch does (key 0 with
  ``flag > 0`` means InsightFace, no key 0 or ``flag == 0`` means im2rec), with one refinement: a key-0 record with
  ``flag > 0`` *and an image payload* is an im2rec ``--pack-label`` image (array label), not a header record, since
  header records always have an empty payload. arcface_torch would misread such a file. (The detection is
  :class:`~qualiface.data.recordio.reader.RecordIOReader`'s.)
* **Index.** ``<key>\\t<byte offset>\\n`` per record, in write order. When the ``.idx`` is missing the
  reader can rebuild it by a sequential scan (:func:`scan_index`), taking each record's ``IRHeader.id`` as its key
  (the MXNet convention ``id == key``; duplicate ids are an error).
* **property.** A text file ``"<num_classes>,<height>,<width>"`` next to the ``.rec``
  (:mod:`qualiface.data.recordio.pack`).

Corrupt records are never skipped: a bad magic, a truncated chunk, a broken cflag sequence, a short header, a
missing key or an out-of-range label raises :class:`RecordIOError` naming the file and the byte offset or key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from qualiface.errors import InputError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
MAX_LENGTH = (1 << 29) - 1
FLOAT32_EXACT_LIMIT = 1 << 24

LabelLike = float | int | Sequence[float] | np.ndarray


class RecordIOError(InputError):
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


def read_framed(fh: BinaryIO, offset: int, source: str) -> tuple[bytes, int]:
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
# Index (``.idx``)


#: The longest ``.idx`` line read (two 20-digit numbers and a tab need 41 bytes; a binary file has no short lines).
MAX_IDX_LINE = 128


def read_idx(idx_path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """Parse a ``.idx`` file into ``(key, byte offset)`` pairs in file order.

    Every non-blank line must be ``<key>\\t<offset>`` in ASCII digits (keys fit the 64-bit record id); lines are
    read at most :data:`MAX_IDX_LINE` bytes at a time, so a binary file costs no more than a text one.

    Raises:
        RecordIOError: a line that is not ``<key>\\t<offset>`` (binary, not UTF-8, too long, a sign, a space inside),
            a key beyond 64 bits or a duplicate key, naming the file and line number.
    """
    path = Path(idx_path)
    pairs: list[tuple[int, int]] = []
    seen: set[int] = set()
    with path.open("rb") as fh:
        for lineno, line in enumerate(iter(lambda: fh.readline(MAX_IDX_LINE + 1), b""), start=1):
            if len(line) > MAX_IDX_LINE:
                raise RecordIOError(f"{path}:{lineno}: line longer than {MAX_IDX_LINE} bytes: not a .idx file")
            stripped = line.strip()
            key_text, _, offset_text = stripped.partition(b"\t")
            if not (key_text.isdigit() and offset_text.isdigit()):  # ASCII digits only (bytes.isdigit)
                if not stripped:
                    continue
                raise RecordIOError(f"{path}:{lineno}: expected '<key>\\t<offset>', got {_shown(stripped)}")
            key, offset = int(key_text), int(offset_text)
            if key >= 1 << 64:
                raise RecordIOError(f"{path}:{lineno}: key {key} does not fit the 64-bit record id")
            if key in seen:
                raise RecordIOError(f"{path}:{lineno}: duplicate key {key}")
            seen.add(key)
            pairs.append((key, offset))
    return pairs


def _shown(line: bytes) -> str:
    """A line as text for a message: the text when it is UTF-8, else the bytes' repr (``b'\\xff...'``)."""
    try:
        return repr(line.decode("utf-8"))
    except UnicodeDecodeError:
        return f"{line[:40]!r} (not UTF-8 text)"


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
            record, end = read_framed(fh, pos, str(path))
            header, _ = unpack_record(record, source=f"{path} (record at byte offset {pos})")
            if header.id in seen:
                raise RecordIOError(f"{path}: duplicate record id {header.id} at byte offset {pos}")
            seen.add(header.id)
            pairs.append((header.id, pos))
            pos = end
    return pairs
