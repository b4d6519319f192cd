"""Inputs of the evaluation: reading embeddings, scores, labels and qualities from ``.npy``, ``.npz`` and CSV files,
and the argument checks that several evaluation functions share.

Every loader checks what it returns and raises ``ValueError`` naming the file, the key or column, and the
first offending row, so that a bad input never turns into a wrong number. The argument checks
(:func:`finite_vector`, :func:`binary_labels`, :func:`open_interval_values`, :func:`unit_interval_values`,
:func:`finite_values`, :func:`check_ranks`, :func:`check_dims`) raise ``ValueError`` naming the argument and, for
arrays, the first offending index. Checks that only one protocol needs stay with it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike


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


# ----------------------------------------------------------------------------------------------- argument checks


def finite_vector(name: str, values: ArrayLike, n: int | None = None, n_name: str = "scores") -> np.ndarray:
    """``values`` as a finite float64 1-D array (of ``n`` values, the length of ``n_name``, when ``n`` is given)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if n is not None and array.size != n:
        raise ValueError(f"{name} has {array.size} values but {n_name} has {n}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}")
    return array


def binary_labels(labels: ArrayLike, n: int) -> np.ndarray:
    """``labels`` (booleans, or numbers 0 = non-mated / 1 = mated) as a bool array of ``n`` values (the scores')."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {array.shape}")
    if array.size != n:
        raise ValueError(f"labels has {array.size} values but scores has {n}")
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf":
        raise ValueError(f"labels: expected 0/1 or booleans, got dtype {array.dtype}")
    bad = (array != 0) & (array != 1)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"labels: must be 0 (non-mated) or 1 (mated); index {first} holds {array[first].item()!r}")
    mated: np.ndarray = array == 1
    return mated


def _items(values: float | Sequence[float] | np.ndarray) -> tuple[Any, ...]:
    """A scalar (``numpy.ndim(values) == 0``) as a 1-tuple, anything else as the tuple of its items."""
    return (values,) if np.ndim(values) == 0 else tuple(cast("Sequence[float]", values))


def open_interval_values(
    name: str, values: float | Sequence[float] | None, low: float, high: float
) -> tuple[float, ...]:
    """One value or several, each strictly between ``low`` and ``high``, as a tuple (empty for ``None``)."""
    if values is None:
        return ()
    out = []
    for item in _items(values):
        value = float(item)
        if not (low < value < high):
            raise ValueError(f"{name}: {value} is outside the open interval ({low}, {high})")
        out.append(value)
    return tuple(out)


def unit_interval_values(name: str, values: float | Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """One value or several, each in [0, 1], as a tuple."""
    out = []
    for item in _items(values):
        value = float(item)
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"{name}: {value} is outside [0, 1]")
        out.append(value)
    return tuple(out)


def finite_values(name: str, values: float | Sequence[float] | None) -> tuple[float, ...]:
    """One value or several, each finite, as a tuple (empty for ``None``)."""
    if values is None:
        return ()
    out = tuple(float(v) for v in _items(values))
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: non-finite value in {out}")
    return out


def check_ranks(ranks: Sequence[int]) -> tuple[int, ...]:
    """Ranks k of a rank-k / CMC report: at least one, each a positive integer."""
    out = tuple(int(k) for k in ranks)
    if not out or min(out) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    return out


def check_dims(probe_feats: np.ndarray, gallery_feats: np.ndarray) -> None:
    """Probe and gallery features of a 1:N search must have the same dimension."""
    if probe_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(f"probe and gallery dims differ: {probe_feats.shape[1]} and {gallery_feats.shape[1]}")
