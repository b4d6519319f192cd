"""The EDC / ERC conventions, defaults and option names, and their checks.

The checks of scores, labels, operating points and discard limits are shared with the other evaluations
(:mod:`qualiface.eval.inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from qualiface.eval.inputs import finite_values, open_interval_values, unit_interval_values

Convention = Literal["fixed_threshold", "crfiqa", "magface"]
ScoreKind = Literal["cosine", "similarity", "distance"]
ErrorType = Literal["fnmr", "fmr"]

CONVENTIONS: tuple[str, ...] = get_args(Convention)
DEFAULT_FMRS: tuple[float, ...] = (1e-3, 1e-4)
DEFAULT_DISCARD_LIMITS: tuple[float, ...] = (0.2, 0.3)
SCORE_KINDS: tuple[str, ...] = get_args(ScoreKind)


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: unknown {convention!r}; use one of {list(CONVENTIONS)}")


def _check_score_kind(score_kind: str) -> None:
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind: unknown {score_kind!r}; use one of {list(SCORE_KINDS)}")


def _check_error(error: str) -> None:
    if error not in get_args(ErrorType):
        raise ValueError(f"error: unknown {error!r}; use 'fnmr' or 'fmr'")


def fixed_threshold_options(
    *,
    fmr: float | Sequence[float] | None,
    starting_error: float | Sequence[float] | None,
    threshold: float | Sequence[float] | None,
    discard_limits: float | Sequence[float],
    error: str,
    score_kind: str,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The checked options of the fixed-threshold EDC: ``(fmrs, starting_errors, thresholds, discard_limits)``."""
    _check_score_kind(score_kind)
    _check_error(error)
    fmrs = open_interval_values("fmr", fmr, 0.0, 1.0)
    e0s = open_interval_values("starting_error", starting_error, 0.0, 1.0)
    thresholds = finite_values("threshold", threshold)
    limits = unit_interval_values("discard_limits", discard_limits)
    return fmrs, e0s, thresholds, limits
