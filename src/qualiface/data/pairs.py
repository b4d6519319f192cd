"""Verification pairs given as an image folder plus a pairs CSV.

CSV format: a header row, then one pair per row, in fold order (the 10-fold protocol uses contiguous blocks of
rows, never a shuffle). Required columns, by name (the first alias found is used):

- first image: ``path_a`` (aliases ``path1``, ``image_a``, ``image1``, ``img1``);
- second image: ``path_b`` (aliases ``path2``, ``image_b``, ``image2``, ``img2``);
- label: ``same`` (aliases ``issame``, ``is_same``, ``label``): ``1``/``0`` or ``true``/``false`` (any case).

Other columns (e.g. ``fold``) are allowed; a ``fold`` column is kept in :attr:`PairList.folds`. Image paths are
relative to ``root`` (default: the CSV's folder); absolute paths are used as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qualiface.data.bin_pairs import LazyImages
from qualiface.imaging import decode_image

PATH_A_ALIASES = ("path_a", "path1", "image_a", "image1", "img1")
PATH_B_ALIASES = ("path_b", "path2", "image_b", "image2", "img2")
SAME_ALIASES = ("same", "issame", "is_same", "label")
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


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


def _column(header: list[str], aliases: Sequence[str], source: str) -> int:
    lowered = [name.strip().lower() for name in header]
    for alias in aliases:
        if alias in lowered:
            return lowered.index(alias)
    raise ValueError(f"{source}: no column {aliases[0]!r} (or {', '.join(aliases[1:])}); the header is {header}")


def load_pairs_csv(path: str | Path, root: str | Path | None = None, *, check_files: bool = True) -> PairList:
    """Read and validate a pairs CSV (module docstring).

    Args:
        path: the CSV file.
        root: folder the image paths are relative to; default the CSV's folder.
        check_files: check that every image file exists (the error lists the missing ones).

    Raises:
        ValueError: missing CSV, missing columns, a row with the wrong number of fields, a bad ``same`` or
            ``fold`` value (named with its line), no pairs, missing image files.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ValueError(f"{source}: no such file")
    base = Path(root) if root is not None else path.parent
    if not base.is_dir():
        raise ValueError(f"{base}: the image root is not a folder")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{source}: empty file; expected a header row such as path_a,path_b,same")
        rows = [(number, row) for number, row in enumerate(reader, start=2) if any(field.strip() for field in row)]
    col_a = _column(header, PATH_A_ALIASES, source)
    col_b = _column(header, PATH_B_ALIASES, source)
    col_same = _column(header, SAME_ALIASES, source)
    lowered = [name.strip().lower() for name in header]
    col_fold = lowered.index("fold") if "fold" in lowered else None
    if not rows:
        raise ValueError(f"{source}: no pairs after the header")
    paths_a, paths_b, same, folds = [], [], [], []
    for number, row in rows:
        if len(row) != len(header):
            raise ValueError(f"{source}: line {number} has {len(row)} fields, the header has {len(header)}")
        value = row[col_same].strip().lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(
                f"{source}: line {number}: {header[col_same]!r} is {row[col_same]!r}; expected 1/0 or true/false"
            )
        same.append(value in _TRUE)
        paths_a.append(base / row[col_a].strip())
        paths_b.append(base / row[col_b].strip())
        if col_fold is not None:
            try:
                folds.append(int(row[col_fold]))
            except ValueError:
                raise ValueError(f"{source}: line {number}: fold is {row[col_fold]!r}; expected an integer") from None
    if check_files:
        missing = sorted({str(p) for p in (*paths_a, *paths_b) if not p.is_file()})
        if missing:
            shown = "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
            raise ValueError(f"{source}: {len(missing)} image file(s) not found (root {base}):\n  {shown}")
    return PairList(
        paths_a=paths_a,
        paths_b=paths_b,
        issame=np.array(same, dtype=bool),
        folds=np.array(folds, dtype=np.int64) if col_fold is not None else None,
        source=source,
    )
