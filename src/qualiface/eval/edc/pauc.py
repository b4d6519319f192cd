"""Areas under EDC / ERC curves (docs/protocols.md, 'pAUC').

The fixed-threshold EDC uses the stepwise area of ``dasec/quality-assessment-evaluation: edc.py`` and the area
under the theoretical best curve; the recomputed-threshold ERCs use the trapezoidal area.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.inputs import unit_interval_values


def _step_pauc(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    if limit == 0.0:
        return 0.0
    j = int(np.searchsorted(x, limit, side="left"))  # points x[:j] lie below the limit (x is increasing)
    right = np.minimum(x[1 : j + 1], limit)
    if right.size < j:  # the last point lies below the limit: it extends to the limit
        right = np.append(right, limit)
    return float(np.sum(y[:j] * (right - x[:j])))


def edc_pauc(discard_fractions: ArrayLike, error_fractions: ArrayLike, discard_limit: float) -> float:
    """Stepwise partial area under an EDC up to ``discard_limit`` (``dasec``'s ``compute_edc_pauc``;
    docs/protocols.md, 'pAUC').

    ``pAUC(L) = Σ_j y_j · (min(x_{j+1}, L) - x_j)`` over the points with ``x_j < L``, the curve being
    right-continuous steps; the last point extends to L. Not normalised.
    """
    x = np.asarray(discard_fractions, dtype=np.float64)
    y = np.asarray(error_fractions, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"edc_pauc: discard and error fractions must be 1-D of equal length, got {x.shape}, {y.shape}")
    if np.any(x[1:] <= x[:-1]):
        raise ValueError("edc_pauc: discard fractions must be strictly increasing")
    return _step_pauc(x, y, unit_interval_values("discard_limits", discard_limit)[0])


def area_under_theoretical_best(starting_error: float, discard_limit: float) -> float:
    """Area under ``max(0, e0 - x)`` up to ``discard_limit``: ``e0²/2 - max(0, e0 - L)²/2`` (``dasec``;
    docs/protocols.md, 'pAUC')."""
    e0 = float(starting_error)
    limit = unit_interval_values("discard_limits", discard_limit)[0]
    return e0**2 / 2 - max(0.0, e0 - limit) ** 2 / 2


def _trapezoid_pauc(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area of a sampled curve from x[0] to ``min(limit, x[-1])``, linear interpolation at the limit."""
    end = min(limit, float(x[-1]))
    if end <= x[0]:
        return 0.0
    inside = x < end
    xs = np.append(x[inside], end)
    ys = np.append(y[inside], np.interp(end, x, y))
    return float(np.trapezoid(ys, xs))
