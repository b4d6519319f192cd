"""Verification pairs given as an image folder plus a pair list (CSV, TSV or whitespace-separated text).

Layout (docs/formats.md, 'Pair lists'): a header row, then one pair per row, in fold order (the 10-fold protocol
uses contiguous blocks of rows, never a shuffle). The delimiter is taken from the header line: a tab, else a comma,
else a semicolon, else runs of spaces (then paths cannot contain spaces). Three columns are needed; they are found
by name, compared without case and without the characters that are not letters or digits (``File X``, ``file_x``
and ``file-x`` are one name), the first recognised name of each list winning:

- first image: :data:`PATH_A_NAMES` (``path_a``, ``path1``, ``image_a``, ``image1``, ``img1``, ``file1``,
  ``file_x``, ``left``, ``a``, ``probe`` ...);
- second image: :data:`PATH_B_NAMES` (``path_b``, ``path2``, ``image2``, ``file2``, ``file_y``, ``right``, ``b``,
  ``reference`` ...);
- label: :data:`LABEL_NAMES` (``same``, ``issame``, ``label``, ``match``, ``decision``, ``genuine``, ``target``
  ...), whose values are read without case: :data:`GENUINE_VALUES` (``1``, ``true``, ``yes``, ``same``,
  ``genuine``, ``match`` ...) or :data:`IMPOSTOR_VALUES` (``0``, ``false``, ``no``, ``different``, ``impostor``,
  ``non-match`` ...).

Any other names are given with ``columns="A,B,LABEL"`` (``--columns`` on the command line). Other columns are
allowed; a ``fold`` column is kept in :attr:`PairList.folds`. Image paths are relative to ``root`` (default: the
list's folder); absolute paths are used as they are. Every error is one line naming the file, the line and the
value (or the header and the recognised names).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qualiface.data.bin_pairs import LazyImages
from qualiface.errors import InputError
from qualiface.imaging import decode_image

if TYPE_CHECKING:
    from qualiface.detect.options import DetectorOptions

PATH_A_NAMES: tuple[str, ...] = (
    "path_a", "path1", "image_a", "image1", "img_a", "img1", "file_a", "file1", "filename1", "filename_a",
    "file_x", "path_x", "image_x", "img_x", "left", "a", "first", "probe", "query",
)  # fmt: skip
"""Recognised names of the first image's column, in order of preference (compared by :func:`canonical_name`)."""
PATH_B_NAMES: tuple[str, ...] = (
    "path_b", "path2", "image_b", "image2", "img_b", "img2", "file_b", "file2", "filename2", "filename_b",
    "file_y", "path_y", "image_y", "img_y", "right", "b", "second", "reference", "gallery",
)  # fmt: skip
"""Recognised names of the second image's column, in order of preference."""
LABEL_NAMES: tuple[str, ...] = (
    "same", "issame", "is_same", "label", "match", "is_match", "matched", "mated", "decision", "genuine",
    "target", "same_person", "same_identity", "ground_truth",
)  # fmt: skip
"""Recognised names of the label column (1 = both images show one person), in order of preference."""
GENUINE_VALUES: tuple[str, ...] = ("1", "true", "t", "yes", "y", "same", "genuine", "match", "mated", "positive")
"""Label values meaning "same person" (compared by :func:`canonical_name`; a number equal to 1 counts too)."""
IMPOSTOR_VALUES: tuple[str, ...] = (
    "0", "false", "f", "no", "n", "different", "diff", "impostor", "imposter", "non-match", "nonmatch",
    "mismatch", "non-mated", "negative",
)  # fmt: skip
"""Label values meaning "different people" (a number equal to 0 counts too)."""

# Backward-compatible names of the first lists (PATH_A_ALIASES etc. were the only names before).
PATH_A_ALIASES = PATH_A_NAMES
PATH_B_ALIASES = PATH_B_NAMES
SAME_ALIASES = LABEL_NAMES


def canonical_name(name: str) -> str:
    """A column name or label value as compared: lower case, letters and digits only (``'File X'`` → ``'filex'``,
    ``'non-match'`` → ``'nonmatch'``)."""
    return re.sub(r"[^0-9a-z]", "", name.strip().lower())


_GENUINE = frozenset(canonical_name(v) for v in GENUINE_VALUES)
_IMPOSTOR = frozenset(canonical_name(v) for v in IMPOSTOR_VALUES)


def parse_label(value: str) -> bool | None:
    """``True`` (genuine), ``False`` (impostor) or ``None`` (not a recognised label) for one label cell: the
    values of :data:`GENUINE_VALUES` / :data:`IMPOSTOR_VALUES`, or a number equal to 1 / 0 (``1.0``)."""
    try:
        number = float(value)
    except ValueError:
        key = canonical_name(value)
        return True if key in _GENUINE else False if key in _IMPOSTOR else None
    return True if number == 1.0 else False if number == 0.0 else None


class ImageFiles(LazyImages):
    """Image files decoded on access (Pillow, any format it reads) to RGB ``uint8`` ``(H, W, 3)``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        """The file's path."""
        return str(self.paths[index])

    def decode(self, index: int) -> np.ndarray:
        """Image ``index`` decoded to RGB ``uint8`` ``(H, W, 3)``."""
        path = self.paths[index]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
        return decode_image(data, str(path))


@dataclass(frozen=True)
class PairList:
    """Pairs of image files: ``paths_a[i]``, ``paths_b[i]``, ``issame[i]`` (1 = genuine), optional ``folds``."""

    paths_a: list[Path]
    paths_b: list[Path]
    issame: np.ndarray
    folds: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return int(self.issame.shape[0])

    def unique_images(self) -> tuple[ImageFiles, np.ndarray, np.ndarray]:
        """The distinct image files (in first-use order) and, per pair, the index of each side among them; embed
        each file once and gather ``emb[index_a]``, ``emb[index_b]``."""
        order: dict[Path, int] = {}
        index_a = np.array([order.setdefault(p, len(order)) for p in self.paths_a], dtype=np.int64)
        index_b = np.array([order.setdefault(p, len(order)) for p in self.paths_b], dtype=np.int64)
        return ImageFiles(list(order)), index_a, index_b


def _split_columns(columns: str | Sequence[str], source: str) -> tuple[str, str, str]:
    names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else [str(c).strip() for c in columns]
    if len(names) != 3 or not all(names):
        raise InputError(
            f"{source}: columns={columns!r}: give three column names, first image, second image and label "
            "(e.g. --columns file_x,file_y,Decision)"
        )
    return names[0], names[1], names[2]


def _named_column(header: list[str], name: str, source: str, columns: str | Sequence[str]) -> int:
    """The index of the column called ``name`` (exact first, then by :func:`canonical_name`)."""
    stripped = [h.strip() for h in header]
    if name in stripped:
        return stripped.index(name)
    keys = [canonical_name(h) for h in header]
    if canonical_name(name) in keys:
        return keys.index(canonical_name(name))
    raise InputError(f"{source}: no column {name!r} (named by columns={columns!r}); the header is {stripped}")


def _recognised_column(header: list[str], names: Sequence[str], what: str, source: str) -> int:
    """The index of the first of ``names`` found in ``header`` (by :func:`canonical_name`)."""
    keys = [canonical_name(h) for h in header]
    for name in names:
        if canonical_name(name) in keys:
            return keys.index(canonical_name(name))
    raise InputError(
        f"{source}: no column for the {what}; the header is {[h.strip() for h in header]}; recognised names: "
        f"{', '.join(names)} (any case; spaces, '-' and '_' ignored); name other columns with --columns A,B,LABEL "
        "(columns= in Python)"
    )


def _delimiter(line: str) -> str | None:
    """The header line's delimiter: tab, comma or semicolon (in that order), ``None`` for runs of spaces."""
    for candidate in ("\t", ",", ";"):
        if candidate in line:
            return candidate
    return None


def _read_rows(path: Path, source: str) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """Header, non-blank ``(line number, fields)`` rows and a description of the delimiter."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text (byte {exc.start}); a pair list is a text file") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise InputError(f"{source}: empty file; expected a header row such as path_a,path_b,same")
    delimiter = _delimiter(lines[first])
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if n > first + 1 and line.strip()]
    if delimiter is None:
        header = lines[first].split()
        rows = [(n, line.split()) for n, line in numbered]
        return header, rows, "spaces"
    header = next(csv.reader([lines[first]], delimiter=delimiter))
    rows = [(n, next(csv.reader([line], delimiter=delimiter))) for n, line in numbered]
    return header, rows, {"\t": "tab", ",": "comma", ";": "semicolon"}[delimiter]


def load_pairs_csv(
    path: str | Path,
    root: str | Path | None = None,
    *,
    columns: str | Sequence[str] | None = None,
    check_files: bool = True,
) -> PairList:
    """Read and validate a pair list (module docstring; docs/formats.md, 'Pair lists').

    Args:
        path: the list: CSV, TSV or whitespace-separated text with a header row.
        root: folder the image paths are relative to; default the list's folder.
        columns: the first-image, second-image and label columns, as ``"A,B,LABEL"`` or a sequence of three
            names, for lists whose names are not recognised; default: found among :data:`PATH_A_NAMES`,
            :data:`PATH_B_NAMES` and :data:`LABEL_NAMES`.
        check_files: check that every image file exists (the error lists the missing ones).

    Raises:
        InputError: (a ``ValueError``) missing list, missing or ambiguous columns (the message shows the header and
            the recognised names), a row with the wrong number of fields, a label or ``fold`` value that is not
            recognised (named with its line), no pairs, missing image files.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(f"{source}: no such file")
    base = Path(root) if root is not None else path.parent
    if not base.is_dir():
        raise InputError(f"{base}: the image root is not a folder")
    header, rows, delimiter = _read_rows(path, source)
    if columns is not None:
        names = _split_columns(columns, source)
        col_a, col_b, col_same = (_named_column(header, name, source, columns) for name in names)
    else:
        col_a = _recognised_column(header, PATH_A_NAMES, "first image", source)
        col_b = _recognised_column(header, PATH_B_NAMES, "second image", source)
        col_same = _recognised_column(header, LABEL_NAMES, "label (1 = same person)", source)
    if len({col_a, col_b, col_same}) != 3:
        raise InputError(f"{source}: the image and label columns must differ; the header is {header}")
    keys = [canonical_name(h) for h in header]
    col_fold = keys.index("fold") if "fold" in keys and keys.index("fold") not in (col_a, col_b, col_same) else None
    if not rows:
        raise InputError(f"{source}: no pairs after the header")
    label_name = header[col_same].strip()
    paths_a, paths_b, same, folds = [], [], [], []
    for number, row in rows:
        if len(row) != len(header):
            raise InputError(
                f"{source}: line {number} has {len(row)} fields, the header has {len(header)} "
                f"(fields separated by {delimiter})"
            )
        label = parse_label(row[col_same])
        if label is None:
            raise InputError(
                f"{source}: line {number}: {label_name!r} is {row[col_same]!r}; expected 1/0, true/false, yes/no, "
                "same/different, genuine/impostor or match/non-match"
            )
        same.append(label)
        paths_a.append(base / row[col_a].strip())
        paths_b.append(base / row[col_b].strip())
        if col_fold is not None:
            try:
                folds.append(int(row[col_fold]))
            except ValueError:
                raise InputError(f"{source}: line {number}: fold is {row[col_fold]!r}; expected an integer") from None
    if check_files:
        missing = sorted({str(p) for p in (*paths_a, *paths_b) if not p.is_file()})
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(f"{source}: {len(missing)} image file(s) not found (root {base}): {shown}")
    return PairList(
        paths_a=paths_a,
        paths_b=paths_b,
        issame=np.array(same, dtype=bool),
        folds=np.array(folds, dtype=np.int64) if col_fold is not None else None,
        source=source,
    )


@dataclass
class PairImages:
    """The images of a :class:`PairList` ready to embed: aligned crops (decoded on access, or detected and aligned
    in memory), per pair the row of each side, and which pairs could be scored.

    Attributes:
        images: the crops to embed: :class:`ImageFiles` (the files were already aligned crops) or a
            ``(N, 112, 112, 3)`` ``uint8`` array (detected and aligned).
        index_a, index_b: per pair, the row of each side in ``images`` (``-1`` where that side gave no face).
        keep: per pair, whether both sides gave a crop; the other pairs are left out of the evaluation.
        detected: whether faces were detected and aligned (``False``: taken as aligned crops).
        reason: why the images were (or were not) detected, for the report.
        failures: ``(file, reason, message)`` of every file that gave no crop (``no_face``, ``unreadable``,
            ``wrong_size``, ``detector_error``).
    """

    images: ImageFiles | np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    keep: np.ndarray
    detected: bool
    reason: str
    failures: list[tuple[Path, str, str]]

    @property
    def n_dropped(self) -> int:
        """Pairs left out because a side gave no crop."""
        return int((~self.keep).sum())

    def warning(self, limit: int = 10) -> str | None:
        """One line naming the dropped pairs and the files behind them (``None`` when nothing was dropped)."""
        if not self.failures:
            return None
        shown = "; ".join(f"{path} ({reason})" for path, reason, _ in self.failures[:limit])
        more = f"; and {len(self.failures) - limit} more" if len(self.failures) > limit else ""
        return (
            f"{self.n_dropped} of {self.keep.size} pairs left out: {len(self.failures)} image(s) gave no face: "
            f"{shown}{more}"
        )

    def require_pairs(self, source: str | Path) -> None:
        """Raise :class:`InputError` (naming ``source``, why no image gave a face and what to do) when no pair has a
        crop on both sides."""
        if self.keep.any():
            return
        reasons = sorted({reason for _, reason, _ in self.failures})
        if self.detected:
            advice = "check --detector (e.g. score=0.3) or make aligned crops with `qualiface align`"
        elif "wrong_size" in reasons:
            advice = "give photos without --aligned to detect the faces, or make crops with `qualiface align`"
        else:
            advice = "check --root and the files"
        raise InputError(
            f"{source}: no pair has a face on both sides ({len(self.failures)} image(s) gave none: "
            f"{', '.join(reasons)}); {advice}"
        )


def _crop_sizes(paths: Sequence[Path]) -> tuple[dict[Path, tuple[int, int]], list[tuple[Path, str, str]]]:
    """``(height, width)`` of every readable file from its header, and the unreadable ones as failures."""
    from qualiface.imaging import image_size, read_image_bytes

    sizes: dict[Path, tuple[int, int]] = {}
    unreadable: list[tuple[Path, str, str]] = []
    for path in paths:
        try:
            width, height = image_size(read_image_bytes(path), str(path))
        except ValueError as exc:  # ImageDecodeError is a ValueError naming the file
            unreadable.append((path, "unreadable", str(exc)))
        else:
            sizes[path] = (height, width)
    return sizes, unreadable


def pair_images(
    pairs: PairList,
    *,
    input_size: tuple[int, int] = (112, 112),
    aligned: bool | None = None,
    detector_options: DetectorOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PairImages:
    """Make the images of ``pairs`` embeddable: take them as aligned crops, or detect and align them.

    Args:
        pairs: the pair list.
        input_size: ``(height, width)`` of the model's input; files of this size or 112x112 count as crops.
        aligned: ``True``: the files are aligned crops (any other size is a ``wrong_size`` failure, never a
            resize); ``False``: detect and align every file (:func:`qualiface.use.load_faces`); ``None``
            (default): crops when every readable file is ``input_size`` or 112x112 and all share one size, else
            detect and align.
        detector_options: :class:`~qualiface.detect.options.DetectorOptions` of the detection (default the
            defaults).
        progress: called as ``progress(done, total)`` per file while detecting.

    Pairs with a side that gave no crop are marked in :attr:`PairImages.keep` (never dropped silently: the
    failures name each file); the caller evaluates the kept pairs and reports the others.
    """
    files, index_a, index_b = pairs.unique_images()
    paths = list(files.paths)
    crop_sizes = {tuple(input_size), (112, 112)}
    if aligned is None:
        sizes, unreadable = _crop_sizes(paths)
        distinct = set(sizes.values())
        aligned = len(distinct) <= 1 and distinct <= crop_sizes
        if aligned:
            reason = "every image is an aligned crop of the model's input size"
        else:
            shown = ", ".join(f"{w}x{h}" for h, w in sorted(distinct)[:4]) + (" ..." if len(distinct) > 4 else "")
            reason = f"the images are not all aligned crops of the model's input size (sizes {shown}): detected"
    elif aligned:
        sizes, unreadable = _crop_sizes(paths)
        reason = "stated aligned crops (taken as they are)"
    else:
        reason = "detected and aligned as asked"
    if aligned:
        failures = list(unreadable)
        for path, size in sizes.items():
            if size not in crop_sizes:
                message = (
                    f"{path}: image is {size[1]}x{size[0]} pixels; an aligned crop is {input_size[1]}x{input_size[0]}"
                )
                failures.append((path, "wrong_size", message))
        bad = {path for path, _, _ in failures}
        good = [p for p in paths if p not in bad]
        row = {p: i for i, p in enumerate(good)}
        rows = np.array([row.get(p, -1) for p in paths], dtype=np.int64)
        images: ImageFiles | np.ndarray = ImageFiles(good)
    else:
        from qualiface.use import face_index, load_faces

        faces = load_faces(paths, detector_options=detector_options, progress=progress)
        failures = [(f.path, f.reason, f.message) for f in faces.failures]
        rows = face_index(faces, paths)
        images = faces.images
    a, b = rows[index_a], rows[index_b]
    order = {p: i for i, p in enumerate(paths)}
    failures.sort(key=lambda f: order.get(f[0], len(order)))
    return PairImages(images, a, b, (a >= 0) & (b >= 0), not aligned, reason, failures)
