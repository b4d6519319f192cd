"""The EDC / ERC conventions, defaults and option names, and their checks.

The checks of scores, labels, operating points and discard limits are shared with the other evaluations
(:mod:`qualiface.eval.inputs`).
"""

from __future__ import annotations

from typing import Literal

Convention = Literal["fixed_threshold", "crfiqa", "magface"]
ScoreKind = Literal["cosine", "similarity", "distance"]
ErrorType = Literal["fnmr", "fmr"]

CONVENTIONS: tuple[str, ...] = ("fixed_threshold", "crfiqa", "magface")
DEFAULT_FMRS: tuple[float, ...] = (1e-3, 1e-4)
DEFAULT_DISCARD_LIMITS: tuple[float, ...] = (0.2, 0.3)
SCORE_KINDS: tuple[str, ...] = ("cosine", "similarity", "distance")


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: unknown {convention!r}; use one of {list(CONVENTIONS)}")


def _check_score_kind(score_kind: str) -> None:
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind: unknown {score_kind!r}; use one of {list(SCORE_KINDS)}")


def _check_error(error: str) -> None:
    if error not in ("fnmr", "fmr"):
        raise ValueError(f"error: unknown {error!r}; use 'fnmr' or 'fmr'")
