"""Writing MXNet RecordIO: framed records to a ``.rec`` and their ``<key>\\t<offset>`` lines to a ``.idx``.

The format is described in :mod:`qualiface.data.recordio.format` and ``docs/formats.md``, section 'RecordIO'.
"""

from __future__ import annotations

import os
from pathlib import Path

from qualiface.data.recordio.format import LabelLike, frame_record, pack_record


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
