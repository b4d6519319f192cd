"""Reading embeddings, scores, labels and qualities from ``.npy``, ``.npz`` and CSV files.

Every loader checks what it returns and raises ``ValueError`` naming the file, the key or column, and the
first offending row, so that a bad input never turns into a wrong number.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _check_finite(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype.kind in "fc":
        bad = ~np.isfinite(array)
        if bad.any():
            first = np.argwhere(bad)[0]
            where = f"row {int(first[0])}" + (f", column {int(first[1])}" if array.ndim > 1 else "")
            raise ValueError(f"{source}: {int(bad.sum())} non-finite value(s) (NaN or inf), first at {where}")
    return array


def _parse_column(values: list[str], source: str) -> np.ndarray:
    try:
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)
    if np.all(numbers == np.round(numbers)) and np.all(np.abs(numbers) < 2**53) and all("." not in v for v in values):
        return numbers.astype(np.int64)
    return _check_finite(numbers, source)


def read_csv_columns(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a CSV file with a header row: numeric columns as int64/float64 arrays, others as strings."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty CSV file (a header row is required)") from None
        rows = [row for row in reader if row]
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in the header {header}")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {number} has {len(row)} fields, the header has {len(header)}")
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    return {
        name: _parse_column([v.strip() for v in values], f"{path}: column {name!r}")
        for name, values in zip(header, columns, strict=True)
    }


def load_table(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file or all columns of a CSV file, by name (``.npy``: key ``"array"``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {key: _check_finite(data[key], f"{path}: array {key!r}") for key in data.files}
    if suffix == ".npy":
        return {"array": _check_finite(np.load(path, allow_pickle=False), str(path))}
    if suffix in (".csv", ".txt"):
        return read_csv_columns(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npy, .npz or .csv")


def load_array(path: str | Path, key: str | Sequence[str] | None = None) -> np.ndarray:
    """One array from ``.npy``, ``.npz`` (``key``, or the only array) or CSV (``key`` = one column or several,
    stacked as columns; ``None`` = every numeric column)."""
    path = Path(path)
    table = load_table(path)
    if path.suffix.lower() == ".npy":
        return table["array"]
    keys = [key] if isinstance(key, str) else list(key) if key is not None else None
    if keys is None:
        if path.suffix.lower() == ".npz":
            if len(table) != 1:
                raise ValueError(f"{path}: holds {sorted(table)}; say which one to use")
            return next(iter(table.values()))
        keys = [name for name, column in table.items() if column.dtype.kind in "if"]
        if not keys:
            raise ValueError(f"{path}: no numeric column")
    missing = [k for k in keys if k not in table]
    if missing:
        raise ValueError(
            f"{path}: no {'array' if path.suffix.lower() == '.npz' else 'column'} {missing}; available: {sorted(table)}"
        )
    if len(keys) == 1:
        return table[keys[0]]
    return np.stack([np.asarray(table[k], dtype=np.float64) for k in keys], axis=1)


def select_key(
    table: dict[str, np.ndarray], source: str | Path, key: str | None, known: Sequence[str] = (), option: str = ""
) -> str:
    """The array/column of ``table`` to use: ``key`` when given, else the first of the ``known`` names present,
    else the only entry; raises ``ValueError`` naming ``source``, the available keys and the CLI ``option``."""
    if key is None:
        found = [k for k in known if k in table]
        if found:
            return found[0]
        if len(table) == 1:
            return next(iter(table))
        hint = f" with {option}" if option else ""
        raise ValueError(f"{source}: holds {sorted(table)}; say which one to use{hint}")
    if key not in table:
        raise ValueError(f"{source}: no {key!r}; available: {sorted(table)}")
    return key
