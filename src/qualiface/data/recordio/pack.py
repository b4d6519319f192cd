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
    Hidden files and files with other extensions are ignored.

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
    """Write the records of :func:`pack_image_folder`; returns the (height, width) of the first image. Every
    image is decoded once with the bounded decoder (:func:`qualiface.imaging.decode_image`), so a truncated, corrupt
    or oversized file is refused naming it instead of being packed."""
    num_classes = len(identities)
    size: tuple[int, int] | None = None
    ranges = []
    key = 1
    with RecordIOWriter(rec_path, idx_path) as writer:
        for cls, (_, files) in enumerate(identities):
            start = key
            for file in files:
                data = imaging.read_image_bytes(file)
                pixels = imaging.decode_image(data, str(file))
                size = size or (pixels.shape[0], pixels.shape[1])
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
