"""Training images from disk: an image folder (one subfolder per identity) or a CSV list (``path,label``).

Both decode with Pillow to RGB ``uint8`` ``(H, W, 3)`` on access and return ``(image, label)`` items (``image``
after the optional ``transform``). Image files are those with an extension in
:data:`qualiface.data.recordio.IMAGE_EXTENSIONS` (any case); hidden files and folders are ignored.

Bad input is never dropped silently. With ``on_error="raise"`` (the default) it raises :class:`ImageDataError`
naming the folder, CSV row or file. With ``on_error="skip"`` the item is left out, logged as a warning and
recorded in :attr:`ImageListDataset.skipped` (``num_skipped`` counts them):

* at construction: an empty identity folder (the remaining folders get labels ``0..K-1``), a CSV row with the
  wrong number of fields, a non-integer label, a label outside ``[0, num_classes)`` or a missing file; with
  ``verify=True`` also every file that does not decode (each file is decoded once, up front);
* at read time: a file that does not decode is replaced by the next decodable item (in index order, wrapping
  around), so a batch keeps its size. Read-time skips are counted in the process that reads them (each
  DataLoader worker has its own copy); use ``verify=True`` for an exact count in the main process.

No usable item at all is always an error.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from qualiface import imaging
from qualiface.data.recordio import IMAGE_EXTENSIONS
from qualiface.data.recordio.pack import is_identity_folder, is_image_file, list_folder
from qualiface.errors import InputError
from qualiface.imaging import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


class ImageDataError(InputError):
    """Bad training input: the message names the folder, CSV row or image file."""


@dataclass(frozen=True)
class Skipped:
    """One item left out under ``on_error="skip"``: what it was (a path or ``file:line``) and why."""

    what: str
    reason: str


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode ``path`` to a writable RGB ``uint8`` ``(H, W, 3)`` array (the bounded decoder,
    :mod:`qualiface.imaging`).

    Raises:
        ImageDataError: the file cannot be read, is too large or cannot be decoded (the message names it).
    """
    try:
        return imaging.read_image(path, max_pixels=max_pixels)
    except imaging.ImageDecodeError as exc:
        raise ImageDataError(str(exc)) from None


class ImageListDataset(Dataset):
    """A list of ``(path, label)`` samples decoded on access; the base of the folder and CSV datasets.

    Args:
        samples: ``(path, label)`` pairs, labels in ``[0, num_classes)``.
        num_classes: the number of classes.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring).
        transform: optional callable applied to the ``uint8`` image.
        verify: decode every file at construction (undecodable files raise or are skipped).
        source: what the samples came from, for messages.
        skipped: items already left out while building ``samples``.

    Attributes:
        samples: the usable ``(path, label)`` pairs.
        num_classes: the number of classes.
        skipped: the :class:`Skipped` items, construction-time first.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        num_classes: int,
        *,
        on_error: OnError = "raise",
        transform: Callable[[np.ndarray], Any] | None = None,
        verify: bool = False,
        source: str = "image list",
        skipped: Sequence[Skipped] = (),
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error: OnError = on_error
        self.transform = transform
        self.source = source
        self.num_classes = int(num_classes)
        self.skipped: list[Skipped] = list(skipped)
        self.samples: list[tuple[Path, int]] = list(samples)
        if verify:
            kept = []
            for path, label in self.samples:
                try:
                    read_image(path)
                except ImageDataError as exc:
                    self._skip_or_raise(str(path), exc)
                    continue
                kept.append((path, label))
            self.samples = kept
        if not self.samples:
            raise ImageDataError(f"{source}: no usable images")

    def _skip_or_raise(self, what: str, error: ImageDataError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped.append(Skipped(what, str(error)))
        logger.warning("%s: skipped %s (%s); %d skipped so far", self.source, what, error, len(self.skipped))

    @property
    def num_skipped(self) -> int:
        """How many items were left out (construction and reads in this process)."""
        return len(self.skipped)

    @property
    def labels(self) -> np.ndarray:
        """The label of every sample, ``int64 (N,)``."""
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n, index = len(self.samples), int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for offset in range(n):
            path, label = self.samples[(index + offset) % n]
            try:
                image = read_image(path)
            except ImageDataError as exc:
                self._skip_or_raise(str(path), exc)
                continue
            return (self.transform(image) if self.transform is not None else image), label
        raise ImageDataError(f"{self.source}: no decodable image left (all {n} files failed)")


class ImageFolderDataset(ImageListDataset):
    """``root/<identity>/<image>``: identity folders sorted by name get labels ``0..K-1``, files sorted by name.

    Args:
        root: the folder of identity folders.
        on_error: ``"raise"`` or ``"skip"``; with ``"skip"`` an empty or unreadable identity folder is left out
            (and gets no label) instead of raising.
        transform: optional callable applied to the ``uint8`` image.
        verify: decode every file at construction.

    Attributes:
        classes: the identity folder names, in label order.

    Raises:
        ImageDataError: ``root`` is not a folder, it or an identity folder cannot be listed (no permission:
            naming it), has no identity folders, an identity folder has no image (naming it, unless skipped) or no
            image is left.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        on_error: OnError = "raise",
        transform: Callable[[np.ndarray], Any] | None = None,
        verify: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ImageDataError(f"{root}: not a folder")
        folders = list_folder(root, is_identity_folder, ImageDataError)
        if not folders:
            raise ImageDataError(f"{root}: no identity subfolders")
        samples: list[tuple[Path, int]] = []
        skipped: list[Skipped] = []
        self.classes: list[str] = []
        for folder in folders:
            try:
                files = list_folder(folder, is_image_file, ImageDataError)
                if not files:
                    raise ImageDataError(
                        f"{folder}: empty identity folder (no {', '.join(sorted(IMAGE_EXTENSIONS))} files)"
                    )
            except ImageDataError as error:
                if on_error == "raise":
                    raise
                skipped.append(Skipped(str(folder), str(error)))
                logger.warning("%s: skipped identity folder %s (%s)", root, folder, error)
                continue
            samples.extend((path, len(self.classes)) for path in files)
            self.classes.append(folder.name)
        super().__init__(
            samples,
            len(self.classes),
            on_error=on_error,
            transform=transform,
            verify=verify,
            source=str(root),
            skipped=skipped,
        )


class CSVImageDataset(ImageListDataset):
    """Images listed in a CSV file, one ``path,label`` row per image.

    An optional first row ``path,label`` (a header) is ignored; blank lines are ignored. Paths are relative to
    ``root`` (default: the CSV's folder); absolute paths are used as they are. Rows are named ``file:line`` in
    messages.

    Args:
        csv_path: the list.
        root: the folder relative paths start from.
        num_classes: the class count; labels must lie in ``[0, num_classes)``. ``None`` infers ``max label + 1``.
        on_error: ``"raise"`` or ``"skip"``; with ``"skip"`` a bad row (field count, label, missing file) is
            left out instead of raising.
        transform: optional callable applied to the ``uint8`` image.
        verify: decode every file at construction.

    Raises:
        ImageDataError: a bad row (unless skipped), or no usable row.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        *,
        num_classes: int | None = None,
        on_error: OnError = "raise",
        transform: Callable[[np.ndarray], Any] | None = None,
        verify: bool = False,
    ) -> None:
        csv_path = Path(csv_path)
        base = Path(root) if root is not None else csv_path.parent
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        try:
            with csv_path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ImageDataError(f"{csv_path}: cannot read the CSV list ({exc})") from None
        samples: list[tuple[Path, int]] = []
        skipped: list[Skipped] = []
        for line, row in enumerate(rows, start=1):
            fields = [field.strip() for field in row]
            if not any(fields) or (line == 1 and [f.lower() for f in fields] == ["path", "label"]):
                continue
            where = f"{csv_path}:{line}"
            try:
                samples.append(self._parse_row(fields, where, base, num_classes))
            except ImageDataError as exc:
                if on_error == "raise":
                    raise
                skipped.append(Skipped(where, str(exc)))
                logger.warning("%s: skipped row (%s)", csv_path, exc)
        if not samples:
            raise ImageDataError(f"{csv_path}: no usable rows")
        inferred = max(label for _, label in samples) + 1
        super().__init__(
            samples,
            num_classes if num_classes is not None else inferred,
            on_error=on_error,
            transform=transform,
            verify=verify,
            source=str(csv_path),
            skipped=skipped,
        )

    @staticmethod
    def _parse_row(fields: list[str], where: str, base: Path, num_classes: int | None) -> tuple[Path, int]:
        if len(fields) != 2:
            raise ImageDataError(f"{where}: expected 2 fields 'path,label', got {len(fields)}: {fields}")
        name, text = fields
        try:
            label = int(text)
        except ValueError:
            raise ImageDataError(f"{where}: label {text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            upper = num_classes if num_classes is not None else "num_classes"
            raise ImageDataError(f"{where}: label {label} outside the class range [0, {upper})")
        path = Path(name) if Path(name).is_absolute() else base / name
        if not path.is_file():
            raise ImageDataError(f"{where}: image file {path} not found")
        return path, label
