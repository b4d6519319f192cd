"""Rank correlations between quality scores and a ground-truth degradation, or between two quality methods.

Protocol (docs/protocols.md, 'Rank correlations'): none of the reference repositories computes rank correlations;
they are secondary diagnostics next to the EDC. We report Spearman's ρ and Kendall's τ-b with SciPy's defaults
(ties get average ranks; ``scipy.stats.spearmanr`` and ``scipy.stats.kendalltau(variant="b")``), always together
with ``n``:

- between a quality score and a known degradation (blur sigma, JPEG quality, ...) of the same images;
- between two FIQA methods' sample scores on the same images;
- between the pair quality and the mated comparison score.

Never rank FIQA methods by correlation instead of by the EDC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qualiface.eval.inputs import finite_vector
from qualiface.eval.results import Result

__all__ = [
    "RankCorrelation",
    "RankCorrelationMatrix",
    "mated_score_correlation",
    "rank_correlation",
    "rank_correlation_matrix",
]


@dataclass
class RankCorrelation(Result):
    """Spearman's ρ and Kendall's τ-b between ``x`` and ``y`` (with two-sided p-values) over ``n`` values."""

    x_name: str
    y_name: str
    n: int
    spearman_rho: float
    spearman_pvalue: float
    kendall_tau_b: float
    kendall_pvalue: float


@dataclass
class RankCorrelationMatrix(Result):
    """Pairwise Spearman ρ and Kendall τ-b between several named score vectors of equal length ``n``."""

    names: list[str]
    n: int
    spearman_rho: np.ndarray
    kendall_tau_b: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """One row per unordered pair of names."""
        rows = []
        for i, first in enumerate(self.names):
            for j in range(i + 1, len(self.names)):
                rows.append(
                    {
                        "x_name": first,
                        "y_name": self.names[j],
                        "n": self.n,
                        "spearman_rho": float(self.spearman_rho[i, j]),
                        "kendall_tau_b": float(self.kendall_tau_b[i, j]),
                    }
                )
        return rows


def _check_vector(name: str, values: ArrayLike) -> np.ndarray:
    array = finite_vector(name, values)
    if array.size < 3:
        raise ValueError(f"{name}: need at least 3 values for a rank correlation, got {array.size}")
    if np.all(array == array[0]):
        raise ValueError(f"{name}: all {array.size} values are equal ({array[0]}); a rank correlation is undefined")
    return array


def rank_correlation(x: ArrayLike, y: ArrayLike, *, x_name: str = "x", y_name: str = "y") -> RankCorrelation:
    """Spearman's ρ and Kendall's τ-b (SciPy defaults, average ranks for ties) between ``x`` and ``y``.

    Args:
        x: first score vector, e.g. a quality score per image.
        y: second score vector of the same length, e.g. a ground-truth degradation level or another method's score.
        x_name: name of ``x`` in the result and in error messages.
        y_name: name of ``y`` in the result and in error messages.

    Raises:
        ValueError: for non-finite values, lengths that differ, fewer than 3 values, or a constant input.
    """
    from scipy import stats

    a = _check_vector(x_name, x)
    b = _check_vector(y_name, y)
    if a.size != b.size:
        raise ValueError(f"{x_name} has {a.size} values but {y_name} has {b.size}")
    spearman = stats.spearmanr(a, b)
    kendall = stats.kendalltau(a, b, variant="b")
    return RankCorrelation(
        x_name=x_name,
        y_name=y_name,
        n=int(a.size),
        spearman_rho=float(spearman.statistic),
        spearman_pvalue=float(spearman.pvalue),
        kendall_tau_b=float(kendall.statistic),
        kendall_pvalue=float(kendall.pvalue),
    )


def mated_score_correlation(scores: ArrayLike, labels: ArrayLike, quality: ArrayLike) -> RankCorrelation:
    """Spearman ρ / Kendall τ-b between the pair quality and the comparison score over the mated pairs only
    (docs/protocols.md, 'Rank correlations'); ``n`` is the number of mated pairs."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    q = np.asarray(quality)
    if not (s.shape == y.shape == q.shape) or s.ndim != 1:
        raise ValueError(f"scores, labels and quality must be 1-D of equal length, got {s.shape}, {y.shape}, {q.shape}")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError("labels: must be 0 (non-mated) or 1 (mated)")
    mated = y.astype(bool)
    return rank_correlation(q[mated], s[mated], x_name="pair quality", y_name="mated score")


def rank_correlation_matrix(scores: Mapping[str, ArrayLike]) -> RankCorrelationMatrix:
    """Spearman ρ and Kendall τ-b between every two of the named score vectors (e.g. several FIQA methods).

    Raises:
        ValueError: for fewer than two vectors, lengths that differ, non-finite values or a constant vector.
    """
    from scipy import stats

    if len(scores) < 2:
        raise ValueError(f"need at least two score vectors to correlate, got {len(scores)}")
    names = [str(name) for name in scores]
    arrays = [_check_vector(name, values) for name, values in zip(names, scores.values(), strict=True)]
    n = arrays[0].size
    for name, array in zip(names, arrays, strict=True):
        if array.size != n:
            raise ValueError(f"{name} has {array.size} values but {names[0]} has {n}")
    k = len(arrays)
    spearman = np.eye(k)
    kendall = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            spearman[i, j] = spearman[j, i] = stats.spearmanr(arrays[i], arrays[j]).statistic
            kendall[i, j] = kendall[j, i] = stats.kendalltau(arrays[i], arrays[j], variant="b").statistic
    return RankCorrelationMatrix(names=names, n=int(n), spearman_rho=spearman, kendall_tau_b=kendall)
