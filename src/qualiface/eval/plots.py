"""PNG plots of evaluation curves (matplotlib, Agg backend selected at call time, never at import)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

Curve = tuple[np.ndarray, np.ndarray]


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.5), dpi=120)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _check(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"curve {name!r}: x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    return x, y


def plot_roc(curves: Mapping[str, Curve], path: str | Path, *, title: str = "ROC", log_far: bool = True) -> Path:
    """TAR against FAR for each named ``(fpr, tpr)`` curve; FAR on a log axis by default."""
    fig, ax = _figure(title, "FAR (false accept rate)", "TAR (true accept rate)")
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = _check(name, fpr, tpr)
        keep = fpr > 0 if log_far else np.ones_like(fpr, dtype=bool)
        ax.plot(fpr[keep], tpr[keep], label=name)
    if log_far:
        ax.set_xscale("log")
    ax.set_ylim(0.0, 1.01)
    if curves:
        ax.legend(loc="lower right")
    return _save(fig, path)


def plot_edc(
    curves: Mapping[str, Curve],
    path: str | Path,
    *,
    title: str = "Error versus discard",
    reference: Mapping[str, Curve] | None = None,
    ylabel: str = "FNMR",
    discard_limit: float | None = None,
) -> Path:
    """Error against discarded fraction for each quality method, as right-continuous steps.

    ``reference`` curves (e.g. ``{"random": ..., "oracle": ...}``) are drawn grey, dashed, dotted, dash-dotted;
    ``discard_limit`` marks the pAUC limit with a vertical line.
    """
    fig, ax = _figure(title, "fraction discarded", ylabel)
    styles = ("--", ":", "-.")
    for index, (name, (x, y)) in enumerate((reference or {}).items()):
        x, y = _check(name, x, y)
        ax.step(x, y, where="post", linestyle=styles[index % len(styles)], color="0.5", linewidth=1.0, label=name)
    for name, (x, y) in curves.items():
        x, y = _check(name, x, y)
        ax.step(x, y, where="post", label=name)
    if discard_limit is not None:
        ax.axvline(discard_limit, color="k", linewidth=0.8, alpha=0.5)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    if curves or reference:
        ax.legend(loc="upper right")
    return _save(fig, path)


def plot_rejection(
    curves: Mapping[str, Curve],
    path: str | Path,
    *,
    title: str = "Rejection curve",
    ylabel: str = "TAR",
) -> Path:
    """A metric (TAR or accuracy) against the fraction of pairs rejected, one line per method."""
    fig, ax = _figure(title, "fraction rejected", ylabel)
    for name, (x, y) in curves.items():
        x, y = _check(name, x, y)
        ax.plot(x, y, label=name)
    if curves:
        ax.legend(loc="lower right")
    return _save(fig, path)
