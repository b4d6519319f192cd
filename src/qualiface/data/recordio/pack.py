"""``qualiface data pack``: an image folder (``<identity>/<image>``) to ``train.rec`` + ``train.idx`` + ``property``.

The records are laid out as InsightFace's ``RecBuilder`` does (:mod:`qualiface.data.recordio.format`,
``docs/formats.md``, section 'RecordIO'); ``property`` is the text file ``"<num_classes>,<height>,<width>"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qualiface import imaging
from qualiface.data.recordio.format import FLOAT32_EXACT_LIMIT
from qualiface.data.recordio.writer import RecordIOWriter
from qualiface.errors import InputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


@dataclass(frozen=True)
class PackSummary:
    """What :func:`pack_image_folder` wrote."""

    rec_path: Path
    idx_path: Path
    property_path: Path
    num_images: int
    num_classes: int
    class_names: tuple[str, ...]


def list_folder(folder: Path, keep: Callable[[Path], bool], error: type[ValueError] = InputError) -> list[Path]:
    """The entries of ``folder`` that ``keep`` accepts, sorted by name.

    Raises:
        error: (one line naming the folder or entry) a folder that cannot be listed or an entry that cannot be
            examined: no permission, not a folder, gone.
    """
    try:
        return sorted(p for p in folder.iterdir() if keep(p))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise error(f"{exc.filename or folder}: cannot read the folder ({reason})") from None


def is_identity_folder(path: Path) -> bool:
    """A visible sub-folder (one identity of an image folder)."""
    return not path.name.startswith(".") and path.is_dir()


def is_image_file(path: Path) -> bool:
    """A visible file with an extension in :data:`IMAGE_EXTENSIONS` (any case)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _identity_images(root: Path) -> list[tuple[str, list[Path]]]:
    folders = list_folder(root, is_identity_folder)
    if not folders:
        raise InputError(f"{root}: no identity subfolders")
    identities = []
    for folder in folders:
        files = list_folder(folder, is_image_file)
        if not files:
            raise InputError(f"{folder}: empty identity folder (no {', '.join(sorted(IMAGE_EXTENSIONS))} files)")
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

    Layout: InsightFace style, as ``RecBuilder`` writes it (``docs/formats.md``, RecordIO: layouts). Identity
    folders are sorted by name and get classes ``0..C-1``; files within a folder are sorted by name. Images get keys
    ``1..N`` with a scalar label (``flag = 0``) and their file bytes verbatim (no re-encoding: JPEG stays JPEG, PNG
    stays PNG).
    Then identity records ``N+1..N+C`` with ``label = [first_key, last_key + 1]``, then the header record 0 with
    ``label = [N+1, N+1+C]`` and ``id2 = 1``. ``property`` is ``"C,H,W"`` with the size of the first image.
    Hidden files and files with other extensions are ignored. Photos that are not aligned crops yet go through
    :func:`qualiface.data.photo_dataset.pack_photos` (``qualiface data pack --detect``) instead.

    Raises:
        InputError: no identity folders, a folder that cannot be listed, an empty identity folder, or more than 2^24
            records (float32 ranges would not be exact).
        ImageDecodeError: an image that cannot be read or decoded (truncated, corrupt, over the pixel limit).
        FileExistsError: ``train.rec`` exists and ``overwrite`` is false.
    """
    root, out = Path(image_root), Path(out_dir)
    identities = _identity_images(root)
    num_images = sum(len(files) for _, files in identities)
    num_classes = len(identities)
    if num_images + 1 + num_classes > FLOAT32_EXACT_LIMIT:
        raise InputError(f"{root}: {num_images} images + {num_classes} classes exceed the float32-exact 2^24 keys")
    if not rec_name.endswith(".rec"):
        raise ValueError(f"rec_name must end in .rec, got {rec_name!r}")
    out.mkdir(parents=True, exist_ok=True)
    with PackWriter(out / rec_name, overwrite=overwrite) as writer:
        for name, files in identities:
            for file in files:
                data = imaging.read_image_bytes(file)
                pixels = imaging.decode_image(data, str(file))  # refuses a truncated, corrupt or oversized file
                writer.add(name, data, (pixels.shape[0], pixels.shape[1]))
    assert writer.summary is not None
    return writer.summary


class PackWriter:
    """Stream images into ``name.rec`` + ``name.idx`` + ``property`` in the layout of :func:`pack_image_folder`.

    Images are added identity by identity (:meth:`add`); an identity's records must be contiguous, and identities
    get classes ``0, 1, ...`` in the order they first appear. Leaving the ``with`` block normally writes the
    identity records and the header, renames the temporary ``.rec``/``.idx`` over the targets and writes
    ``property``; leaving it by an exception removes the temporary files and leaves any previous pack as it was.
    Memory stays constant whatever the number of images (only the per-identity key ranges are kept).

    Args:
        rec_path: the ``.rec`` to write; the ``.idx`` and ``property`` go beside it.
        overwrite: replace an existing ``.rec``; otherwise it is refused before anything is written.

    Raises:
        FileExistsError: ``rec_path`` exists and ``overwrite`` is false.
        ValueError: ``rec_path`` does not end in ``.rec``.
    """

    def __init__(self, rec_path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.rec_path = Path(rec_path)
        if self.rec_path.suffix != ".rec":
            raise ValueError(f"{self.rec_path}: a RecordIO pack must end in .rec")
        if self.rec_path.exists() and not overwrite:
            raise FileExistsError(f"{self.rec_path} exists (pass overwrite=True to replace it)")
        self.idx_path = self.rec_path.with_suffix(".idx")
        self.property_path = self.rec_path.parent / "property"
        self._tmp_rec = self.rec_path.with_name(self.rec_path.name + ".tmp")
        self._tmp_idx = self.idx_path.with_name(self.idx_path.name + ".tmp")
        self._writer: RecordIOWriter | None = None
        self._names: list[str] = []
        self._ranges: list[tuple[int, int]] = []
        self._size: tuple[int, int] | None = None
        self._key = 1
        self.summary: PackSummary | None = None

    def __enter__(self) -> PackWriter:
        self._writer = RecordIOWriter(self._tmp_rec, self._tmp_idx)
        return self

    def add(self, identity: str, payload: bytes, size: tuple[int, int]) -> tuple[int, int]:
        """Append one encoded image of ``identity`` (``size`` = its ``(height, width)``); returns ``(key, label)``.

        Raises:
            ValueError: an identity added again after another one, or over 2^24 records.
        """
        if self._writer is None:
            raise ValueError("PackWriter.add outside its with block")
        if not self._names or self._names[-1] != identity:
            if identity in self._names:
                raise ValueError(
                    f"identity {identity!r} added again after {self._names[-1]!r}: records of one "
                    "identity must be contiguous"
                )
            self._names.append(identity)
            self._ranges.append((self._key, self._key))
        if self._key + 1 + len(self._names) > FLOAT32_EXACT_LIMIT:
            raise InputError(f"{self.rec_path}: over 2^24 records; float32 ranges would not be exact")
        label = len(self._names) - 1
        self._writer.write(self._key, label, payload)
        self._ranges[-1] = (self._ranges[-1][0], self._key + 1)
        self._size = self._size or (int(size[0]), int(size[1]))
        self._key += 1
        return self._key - 1, label

    @property
    def num_images(self) -> int:
        """Images added so far."""
        return self._key - 1

    def __exit__(self, exc_type: object, *exc: object) -> None:
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                try:
                    if exc_type is None:
                        self._finish(writer)
                finally:
                    writer.close()
            if exc_type is None:
                os.replace(self._tmp_rec, self.rec_path)
                os.replace(self._tmp_idx, self.idx_path)
                assert self._size is not None
                self.property_path.write_text(f"{len(self._names)},{self._size[0]},{self._size[1]}\n", "utf-8")
                self.summary = PackSummary(
                    self.rec_path,
                    self.idx_path,
                    self.property_path,
                    self.num_images,
                    len(self._names),
                    tuple(self._names),
                )
        finally:
            self._tmp_rec.unlink(missing_ok=True)
            self._tmp_idx.unlink(missing_ok=True)

    def _finish(self, writer: RecordIOWriter) -> None:
        if not self._names:
            raise InputError(f"{self.rec_path}: no images to pack")
        key = self._key
        for start, end in self._ranges:
            writer.write(key, [start, end])
            key += 1
        writer.write(0, [self.num_images + 1, self.num_images + 1 + len(self._names)], id2=1)


def read_property(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Read a ``property`` file ``"<num_classes>,<height>,<width>"`` (``docs/formats.md``, RecordIO).

    Raises:
        InputError: a first line that is not three comma-separated integers (a binary file too), naming the file.
    """
    with Path(path).open("rb") as fh:
        first = fh.read(256).split(b"\n", 1)[0].strip()  # the first line (insightface's shuffle tool adds more)
    fields = first.split(b",")
    if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
        raise InputError(f"{path}: expected '<num_classes>,<height>,<width>', got {first[:40]!r}")
    num_classes, height, width = (int(f) for f in fields)
    return num_classes, height, width
