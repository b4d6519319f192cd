"""Checks of the EDC / ERC arguments: score and label vectors, operating points, discard limits, option names.

Every check raises ``ValueError`` naming the argument and, for arrays, the first offending index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike

Convention = Literal["fixed_threshold", "crfiqa", "magface"]
ScoreKind = Literal["cosine", "similarity", "distance"]
ErrorType = Literal["fnmr", "fmr"]

CONVENTIONS: tuple[str, ...] = ("fixed_threshold", "crfiqa", "magface")
DEFAULT_FMRS: tuple[float, ...] = (1e-3, 1e-4)
DEFAULT_DISCARD_LIMITS: tuple[float, ...] = (0.2, 0.3)
SCORE_KINDS: tuple[str, ...] = ("cosine", "similarity", "distance")


def _finite_vector(name: str, values: ArrayLike, n: int | None = None, n_name: str = "scores") -> np.ndarray:
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


def _binary_labels(labels: ArrayLike, n: int) -> np.ndarray:
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


def _items(values: float | Sequence[float]) -> tuple[Any, ...]:
    """A scalar (``numpy.ndim(values) == 0``) as a 1-tuple, anything else as the tuple of its items."""
    return (values,) if np.ndim(values) == 0 else tuple(cast("Sequence[float]", values))


def _as_tuple(name: str, values: float | Sequence[float] | None, low: float, high: float) -> tuple[float, ...]:
    if values is None:
        return ()
    out = []
    for item in _items(values):
        value = float(item)
        if not (low < value < high):
            raise ValueError(f"{name}: {value} is outside the open interval ({low}, {high})")
        out.append(value)
    return tuple(out)


def _discard_limits(values: float | Sequence[float]) -> tuple[float, ...]:
    out = []
    for item in _items(values):
        value = float(item)
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"discard_limits: {value} is outside [0, 1]")
        out.append(value)
    return tuple(out)


def _thresholds(threshold: float | Sequence[float] | None) -> tuple[float, ...]:
    """Given thresholds as a tuple (empty for ``None``); every one must be finite."""
    if threshold is None:
        return ()
    thresholds = tuple(float(t) for t in _items(threshold))
    if not all(math.isfinite(t) for t in thresholds):
        raise ValueError(f"threshold: non-finite value in {thresholds}")
    return thresholds


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: unknown {convention!r}; use one of {list(CONVENTIONS)}")


def _check_score_kind(score_kind: str) -> None:
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind: unknown {score_kind!r}; use one of {list(SCORE_KINDS)}")


def _check_error(error: str) -> None:
    if error not in ("fnmr", "fmr"):
        raise ValueError(f"error: unknown {error!r}; use 'fnmr' or 'fmr'")
