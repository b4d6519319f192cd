"""MXNet RecordIO (``train.rec`` + ``train.idx`` + ``property``) read and written without MXNet.

* :mod:`~qualiface.data.recordio.format`: the binary format (framing, ``IRHeader``, the ``.idx`` index, errors);
  the format is described there and in ``docs/formats.md``, section 'RecordIO'.
* :mod:`~qualiface.data.recordio.reader`: :class:`RecordIOReader` (random access, a dataset of images) and
  :func:`decode_image`.
* :mod:`~qualiface.data.recordio.writer`: :class:`RecordIOWriter` (records + index).
* :mod:`~qualiface.data.recordio.pack`: :func:`pack_image_folder` (``qualiface data pack``), :class:`PackWriter`
  (images streamed into a pack, as ``qualiface align --out train.rec`` does) and the ``property`` file.
"""

from qualiface.data.recordio.format import (
    FLOAT32_EXACT_LIMIT,
    IR_FORMAT,
    IR_SIZE,
    MAGIC,
    MAGIC_BYTES,
    MAX_LENGTH,
    IRHeader,
    LabelLike,
    RecordIOError,
    frame_record,
    pack_record,
    read_idx,
    scan_index,
    unpack_record,
)
from qualiface.data.recordio.pack import IMAGE_EXTENSIONS, PackSummary, PackWriter, pack_image_folder, read_property
from qualiface.data.recordio.reader import Layout, RecordIOReader, decode_image
from qualiface.data.recordio.writer import RecordIOWriter

__all__ = [
    "FLOAT32_EXACT_LIMIT",
    "IMAGE_EXTENSIONS",
    "IR_FORMAT",
    "IR_SIZE",
    "MAGIC",
    "MAGIC_BYTES",
    "MAX_LENGTH",
    "IRHeader",
    "LabelLike",
    "Layout",
    "PackSummary",
    "PackWriter",
    "RecordIOError",
    "RecordIOReader",
    "RecordIOWriter",
    "decode_image",
    "frame_record",
    "pack_image_folder",
    "pack_record",
    "read_idx",
    "read_property",
    "scan_index",
    "unpack_record",
]
