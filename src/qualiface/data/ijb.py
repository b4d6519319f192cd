"""Readers for the IJB-B / IJB-C meta files (docs/formats.md, 'IJB meta files'), NumPy only.

Layout: ``<root>/{IJBB,IJBC}/meta/`` with lower-case prefixes ``ijbb`` / ``ijbc``:

- ``<x>_face_tid_mid.txt``: ``image_name template_id media_id``, one line per image;
- ``<x>_name_5pts_score.txt``: ``image_name x1 y1 ... x5 y5 faceness``, same image order;
- ``<x>_template_pair_label.txt``: ``template_id_1 template_id_2 label`` (1 = mated), the 1:1 protocol;
- 1:N lists, CSV with a header row, column 0 = template id, column 1 = subject id:
  ``ijbc_1N_gallery_G1.csv``, ``ijbc_1N_gallery_G2.csv``, ``ijbc_1N_probe_mixed.csv`` (IJB-B: ``S1``/``S2``).

Space-separated files are split on any whitespace (``np.loadtxt``; insightface uses ``pandas.read_csv(sep=' ')``,
which gives the same values on well-formed files). Every reader raises :class:`IJBMetaError` (an
:class:`~qualiface.errors.InputError`, so a ``ValueError``) naming the file and the line of the first bad entry (a
line that is not UTF-8, a field that does not parse, an id outside int64), and ``FileNotFoundError`` naming a missing
file. The published counts can be asserted with :func:`check_ijb_counts`.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qualiface.errors import InputError

IJB_COUNTS: dict[str, dict[str, int]] = {
    "IJBB": {
        "images": 227_630,
        "templates": 12_115,
        "pairs": 8_010_270,
        "genuine": 10_270,
        "impostor": 8_000_000,
        "gallery_templates": 1_845,
        "probe_templates": 10_270,
    },
    "IJBC": {
        "images": 469_375,
        "templates": 23_124,
        "pairs": 15_658_489,
        "genuine": 19_557,
        "impostor": 15_638_932,
        "gallery_templates": 3_531,
        "probe_templates": 19_593,
    },
}
"""Published sizes (docs/formats.md, 'IJB meta files'; from the insightface tooling comments, arithmetic-consistent)."""

GALLERY_FILES: dict[str, tuple[str, str]] = {
    "IJBB": ("ijbb_1N_gallery_S1.csv", "ijbb_1N_gallery_S2.csv"),
    "IJBC": ("ijbc_1N_gallery_G1.csv", "ijbc_1N_gallery_G2.csv"),
}
PROBE_FILES: dict[str, str] = {"IJBB": "ijbb_1N_probe_mixed.csv", "IJBC": "ijbc_1N_probe_mixed.csv"}


class IJBMetaError(InputError):
    """An IJB meta file that cannot be read: the message names the file and the line of the first bad entry."""


#: Template, media and subject ids are int64 (numpy's and insightface's type): larger ids are refused.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _int64(text: str) -> int:
    """An integer id as written in the meta files (ASCII digits, an optional sign) that fits int64."""
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in ("-", "+") else stripped
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"cannot parse {text!r}")
    value = int(stripped)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"id {value} is outside the 64-bit integer range")
    return value


def _data_lines(path: Path, skiprows: int = 0) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines after ``skiprows``; a line that is not UTF-8 is refused."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise IJBMetaError(f"{path}: line {number}: not UTF-8 text ({raw[:40]!r})") from None
            if number <= skiprows or not line.strip():
                continue
            yield number, line


def _line_of_row(path: Path, row: int, skiprows: int = 0) -> int:
    """1-based line number of the ``row``-th (0-based) non-blank data line."""
    for i, (number, _) in enumerate(_data_lines(path, skiprows)):
        if i == row:
            return number
    return -1


def _first_bad_line(path: Path, converters: list[Callable[[str], object]], delimiter: str | None, skiprows: int) -> str:
    for number, line in _data_lines(path, skiprows):
        fields = line.strip().split(delimiter)
        if len(fields) != len(converters):
            return f"line {number}: {len(fields)} fields, expected {len(converters)} ({line.strip()[:80]!r})"
        for column, (field, convert) in enumerate(zip(fields, converters, strict=True)):
            try:
                convert(field)
            except ValueError as exc:
                reason = str(exc) if convert is _int64 else f"cannot parse {field!r}"
                return f"line {number}, column {column + 1}: {reason}"
    return "unreadable content"


def _load_columns(path: Path, converters: list[Callable[[str], object]], dtype: type | str) -> np.ndarray:
    """A whitespace-separated table with exactly ``len(converters)`` columns, as a 2-D ``dtype`` array."""
    _require_file(path)
    try:
        with warnings.catch_warnings():  # numpy's notes on blank lines and empty input: an empty file is refused below
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, dtype=dtype, ndmin=2, comments=None, encoding="utf-8")
    except (ValueError, OverflowError):  # UnicodeDecodeError is a ValueError
        raise IJBMetaError(f"{path}: {_first_bad_line(path, converters, None, 0)}") from None
    if table.shape[0] == 0:
        raise IJBMetaError(f"{path}: empty file")
    if table.shape[1] != len(converters):
        raise IJBMetaError(f"{path}: {table.shape[1]} fields per line, expected {len(converters)}")
    return table


def _to_numbers(path: Path, column: np.ndarray, dtype: type, index: int, skiprows: int = 0) -> np.ndarray:
    caster: Callable[[str], object] = _int64 if np.issubdtype(dtype, np.integer) else float
    try:
        with np.errstate(over="ignore"):  # a float beyond float32 becomes inf, refused by the caller's finite check
            return column.astype(dtype)
    except (ValueError, OverflowError):
        for row, text in enumerate(column.tolist()):
            try:
                caster(text)
            except ValueError as exc:
                line = _line_of_row(path, row, skiprows)
                reason = str(exc) if caster is _int64 else f"cannot parse {text!r}"
                raise IJBMetaError(f"{path}: line {line}, column {index + 1}: {reason}") from None
        raise IJBMetaError(f"{path}: column {index + 1}: cannot convert to {np.dtype(dtype).name}") from None


def read_face_tid_mid(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<x>_face_tid_mid.txt`` -> ``(image_names (str), template_ids (int64), media_ids (int64))``."""
    path = Path(path)
    table = _load_columns(path, [str, _int64, _int64], str)
    return table[:, 0], _to_numbers(path, table[:, 1], np.int64, 1), _to_numbers(path, table[:, 2], np.int64, 2)


def read_name_5pts_score(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<x>_name_5pts_score.txt`` -> ``(image_names, landmarks (N, 5, 2) float32, faceness (N,) float32)``.

    Landmarks are in loose-crop pixels (left eye, right eye, nose, left and right mouth corner); the faceness
    (detector) score is the last column. float32 as in insightface.
    """
    path = Path(path)
    table = _load_columns(path, [str] + [float] * 11, str)
    numbers = np.stack([_to_numbers(path, table[:, c], np.float32, c) for c in range(1, 12)], axis=1)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        line = _line_of_row(path, int(row))
        raise IJBMetaError(f"{path}: line {line}, column {int(column) + 2}: non-finite value")
    return table[:, 0], numbers[:, :10].reshape(-1, 5, 2), numbers[:, 10].copy()


def read_template_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<x>_template_pair_label.txt`` -> ``(template_id_1, template_id_2, label)`` (int64, int64, int8 in {0, 1})."""
    path = Path(path)
    table = _load_columns(path, [_int64, _int64, _int64], np.int64)
    labels = table[:, 2]
    wrong = (labels != 0) & (labels != 1)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise IJBMetaError(
            f"{path}: line {_line_of_row(path, row)}: label {int(labels[row])} is not 0 or 1 "
            f"({int(wrong.sum())} such line(s))"
        )
    return table[:, 0].copy(), table[:, 1].copy(), labels.astype(np.int8)


def read_template_subject_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A 1:N gallery or probe CSV (header row; column 0 template id, column 1 subject id) -> two int64 arrays,
    one entry per line (templates repeat when the file lists one line per image)."""
    path = _require_file(Path(path))
    templates: list[int] = []
    subjects: list[int] = []
    line = [0]  # the file line of the row just read (blank lines are not fed to the csv reader)

    def lines() -> Iterator[str]:
        for line[0], text in _data_lines(path):
            yield text

    reader = csv.reader(lines())
    try:
        if next(reader, None) is None:
            raise IJBMetaError(f"{path}: empty file (a header row is expected)")
        for row in reader:
            if not row or not any(field.strip() for field in row):
                continue
            if len(row) < 2:
                raise IJBMetaError(f"{path}: line {line[0]}: {len(row)} field(s), expected at least 2")
            try:
                templates.append(_int64(row[0]))
                subjects.append(_int64(row[1]))
            except ValueError as exc:
                raise IJBMetaError(f"{path}: line {line[0]}: template or subject id {row[:2]}: {exc}") from None
    except csv.Error as exc:
        raise IJBMetaError(f"{path}: line {line[0]}: {exc}") from None
    if not templates:
        raise IJBMetaError(f"{path}: no data rows after the header")
    return np.asarray(templates, dtype=np.int64), np.asarray(subjects, dtype=np.int64)


def template_subjects(
    templates: np.ndarray, subjects: np.ndarray, *, source: str = "list"
) -> tuple[np.ndarray, np.ndarray]:
    """Unique template ids (``np.unique`` order) with their subject id, as insightface takes them (the subject of
    the first occurrence). A template listed with two different subjects raises ``ValueError``."""
    templates = np.asarray(templates)
    subjects = np.asarray(subjects)
    if templates.shape != subjects.shape or templates.ndim != 1:
        raise IJBMetaError(f"{source}: templates and subjects must be 1-D of equal length")
    unique, first, inverse = np.unique(templates, return_index=True, return_inverse=True)
    chosen = subjects[first]
    conflict = chosen[inverse] != subjects
    if conflict.any():
        row = int(np.flatnonzero(conflict)[0])
        raise IJBMetaError(
            f"{source}: template {int(templates[row])} is listed with subjects {int(chosen[inverse[row]])} "
            f"and {int(subjects[row])}"
        )
    return unique, chosen


def detect_subset(meta_dir: str | Path) -> str:
    """``"IJBB"`` or ``"IJBC"`` from the ``<x>_face_tid_mid.txt`` file present in ``meta_dir``."""
    meta_dir = Path(meta_dir)
    found = [name for name in ("IJBB", "IJBC") if (meta_dir / f"{name.lower()}_face_tid_mid.txt").is_file()]
    if len(found) != 1:
        raise FileNotFoundError(
            f"{meta_dir}: expected one of ijbb_face_tid_mid.txt / ijbc_face_tid_mid.txt, found {found or 'none'}"
        )
    return found[0]


def _subset_name(subset: str) -> str:
    name = subset.upper().replace("-", "")
    if name not in IJB_COUNTS:
        raise InputError(f"unknown IJB subset {subset!r}; use 'IJBB' or 'IJBC'")
    return name


@dataclass
class IJBMeta:
    """The 1:1 meta data of one IJB release (images in file order)."""

    subset: str
    image_names: np.ndarray
    template_ids: np.ndarray
    media_ids: np.ndarray
    landmarks: np.ndarray
    faceness: np.ndarray
    pair_t1: np.ndarray
    pair_t2: np.ndarray
    pair_labels: np.ndarray

    def counts(self) -> dict[str, int]:
        """Sizes found, with the keys of :data:`IJB_COUNTS`."""
        n_genuine = int(np.count_nonzero(self.pair_labels))
        return {
            "images": int(self.image_names.shape[0]),
            "templates": int(np.unique(self.template_ids).shape[0]),
            "pairs": int(self.pair_labels.shape[0]),
            "genuine": n_genuine,
            "impostor": int(self.pair_labels.shape[0]) - n_genuine,
        }


def check_ijb_counts(subset: str, found: dict[str, int]) -> None:
    """Compare sizes found with the published ones (:data:`IJB_COUNTS`); ``ValueError`` lists every mismatch.

    Only the keys present in ``found`` are checked, so a caller can check the 1:1 and the 1:N files separately.
    """
    expected = IJB_COUNTS[_subset_name(subset)]
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise ValueError(f"unknown count name(s) {unknown}; known: {sorted(expected)}")
    wrong = [f"{key}: found {found[key]:,}, expected {expected[key]:,}" for key in found if found[key] != expected[key]]
    if wrong:
        raise IJBMetaError(f"{_subset_name(subset)} sizes differ from the published ones: " + "; ".join(wrong))


def load_ijb_meta(meta_dir: str | Path, subset: str | None = None, *, check_counts: bool = False) -> IJBMeta:
    """Read the three 1:1 meta files of ``meta_dir`` (``<root>/IJBC/meta``).

    The image names of ``face_tid_mid`` and ``name_5pts_score`` must agree line by line (insightface silently
    assumes it). With ``check_counts`` the published sizes are asserted (:func:`check_ijb_counts`).
    """
    meta_dir = Path(meta_dir)
    name = _subset_name(subset) if subset is not None else detect_subset(meta_dir)
    prefix = name.lower()
    tid_path = meta_dir / f"{prefix}_face_tid_mid.txt"
    pts_path = meta_dir / f"{prefix}_name_5pts_score.txt"
    names, templates, medias = read_face_tid_mid(tid_path)
    names_5pts, landmarks, faceness = read_name_5pts_score(pts_path)
    if names.shape[0] != names_5pts.shape[0]:
        raise IJBMetaError(f"{tid_path} has {names.shape[0]} images but {pts_path} has {names_5pts.shape[0]}")
    differ = names != names_5pts
    if differ.any():
        row = int(np.flatnonzero(differ)[0])
        raise IJBMetaError(
            f"{tid_path} and {pts_path} list different images at data row {row + 1}: "
            f"{str(names[row])!r} and {str(names_5pts[row])!r}"
        )
    t1, t2, labels = read_template_pairs(meta_dir / f"{prefix}_template_pair_label.txt")
    meta = IJBMeta(name, names, templates, medias, landmarks, faceness, t1, t2, labels)
    if check_counts:
        check_ijb_counts(name, meta.counts())
    return meta


@dataclass
class IJB1NLists:
    """The 1:N gallery and probe lists (one entry per CSV line)."""

    subset: str
    galleries: dict[str, tuple[np.ndarray, np.ndarray]]
    probe: tuple[np.ndarray, np.ndarray]

    def counts(self) -> dict[str, int]:
        """Unique gallery templates (all galleries) and unique probe templates."""
        gallery = np.unique(np.concatenate([t for t, _ in self.galleries.values()]))
        return {"gallery_templates": int(gallery.shape[0]), "probe_templates": int(np.unique(self.probe[0]).shape[0])}


def load_ijb_1n_lists(meta_dir: str | Path, subset: str | None = None, *, check_counts: bool = False) -> IJB1NLists:
    """Read the two gallery CSVs (named ``G1``/``G2`` or ``S1``/``S2`` as in the files) and the probe CSV."""
    meta_dir = Path(meta_dir)
    name = _subset_name(subset) if subset is not None else detect_subset(meta_dir)
    galleries = {}
    for file_name in GALLERY_FILES[name]:
        key = file_name.rsplit("_", 1)[-1].removesuffix(".csv")
        galleries[key] = read_template_subject_csv(meta_dir / file_name)
    lists = IJB1NLists(name, galleries, read_template_subject_csv(meta_dir / PROBE_FILES[name]))
    if check_counts:
        check_ijb_counts(name, lists.counts())
    return lists
