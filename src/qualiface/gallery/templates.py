"""Identity templates: one unit vector per identity, the quality-weighted mean of its images' unit embeddings.

For identity ``k`` with images ``i`` (unit embeddings ``e_i``, weights ``w_i >= 0``) the template is

    t_k = sum_i w_i e_i / || sum_i w_i e_i ||

(the weighted mean, L2-normalised; a template is compared to a probe by cosine). How a quality ``q_i`` becomes a
weight is :class:`Weighting`:

- ``uniform``: ``w_i = 1`` (the plain mean; also what a model without a quality score gets).
- ``quality`` with ``transform="softmax"`` (the default): the quality is first put on a fixed [0, 1] scale
  ``u_i``: the model's calibrated 0-100 quality scale divided by 100 when the model has one (``qualiface
  calibrate``; :meth:`qualiface.decisions.DecisionPolicy.scaled_quality`), else ``(q_i - lo) / (hi - lo)`` over the
  range ``(lo, hi)`` of the gallery's own images (:func:`unit_quality`). Then ``w_i = exp(u_i / temperature)``
  (normalised within the identity). The weights do not depend on the quality's units (any increasing rescaling of
  ``q`` gives the same templates), no image is dropped, and ``temperature`` says how much better faces count: two
  faces at the two ends of the scale weigh ``exp(1 / temperature)`` to 1 (``e^4 ~ 55`` at the default 0.25),
  faces a tenth of the scale apart ``exp(0.1 / temperature)`` (1.5) to 1. ``temperature -> inf`` is the uniform
  mean, ``-> 0`` the best image only.
- ``quality`` with ``transform="minmax"``: ``w_i = (q_i - min_k) / (max_k - min_k)`` over the identity's own
  images: the worst image gets weight 0, the best 1; an identity whose images share one quality (or that has a
  single image) gets the uniform mean. Stretches small differences: two images of nearly equal quality weigh 0
  and 1.
- ``quality`` with ``transform="linear"``: ``w_i = q_i`` (the quality as it is, ``>= 0``: the IJB pooling of
  MagFace norms and CR-FIQA scores in :mod:`qualiface.eval.ijb.pooling`); needs a non-negative quality.

Sums run in float64, in blocks of rows (memory bounded whatever the number of images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from qualiface.errors import InputError

WeightingMethod = Literal["quality", "uniform"]
QualityTransform = Literal["softmax", "minmax", "linear"]
WEIGHTING_METHODS: tuple[str, ...] = ("quality", "uniform")
QUALITY_TRANSFORMS: tuple[str, ...] = ("softmax", "minmax", "linear")
#: Default softmax temperature, in units of the quality range (module docstring).
DEFAULT_TEMPERATURE = 0.25
_BLOCK_ROWS = 65536


@dataclass(frozen=True)
class Weighting:
    """How image qualities become template weights (module docstring).

    Attributes:
        method: ``"quality"`` (weighted by quality through ``transform``) or ``"uniform"`` (plain mean).
        transform: ``"softmax"``, ``"minmax"`` or ``"linear"``; ignored for ``uniform``.
        temperature: the softmax temperature in units of the quality range (``> 0``).
    """

    method: WeightingMethod = "quality"
    transform: QualityTransform = "softmax"
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        if self.method not in WEIGHTING_METHODS:
            raise InputError(f"weighting: unknown method {self.method!r}; use one of {', '.join(WEIGHTING_METHODS)}")
        if self.transform not in QUALITY_TRANSFORMS:
            raise InputError(
                f"weighting: unknown quality transform {self.transform!r}; use one of {', '.join(QUALITY_TRANSFORMS)}"
            )
        temperature: object = self.temperature
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 < float(temperature) < math.inf
        ):
            raise InputError(f"weighting: temperature must be a positive number, got {self.temperature!r}")

    def describe(self) -> str:
        """One line for people: ``quality (softmax, temperature 0.25)`` or ``uniform``."""
        if self.method == "uniform":
            return "uniform"
        if self.transform == "softmax":
            return f"quality (softmax, temperature {self.temperature:g})"
        return f"quality ({self.transform})"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "transform": self.transform, "temperature": float(self.temperature)}

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "weighting") -> Weighting:
        """The weighting of a gallery header; :class:`~qualiface.errors.InputError` naming ``where`` otherwise."""
        if not isinstance(data, dict) or set(data) != {"method", "transform", "temperature"}:
            raise InputError(f"{where}: expected an object with method, transform and temperature")
        return cls(method=data["method"], transform=data["transform"], temperature=data["temperature"])


def image_weights(
    quality: np.ndarray | None,
    identity: np.ndarray,
    n_identities: int,
    weighting: Weighting,
    unit: np.ndarray | None = None,
) -> np.ndarray:
    """The weight ``w_i >= 0`` of every image (float64, module docstring); ``identity`` holds each image's
    template row. ``quality=None`` (a model without quality) or ``uniform`` gives ones; ``softmax`` uses ``unit``,
    the qualities on the [0, 1] scale (:func:`unit_quality`)."""
    n = identity.shape[0]
    if quality is None or weighting.method == "uniform":
        return np.ones(n)
    q = np.asarray(quality, np.float64)
    if q.shape != (n,):
        raise ValueError(f"quality must have one value per image ({n}), got shape {q.shape}")
    bad = ~np.isfinite(q)
    if bad.any():
        raise InputError(f"quality: {int(bad.sum())} non-finite value(s), first at image {int(np.flatnonzero(bad)[0])}")
    if weighting.transform == "linear":
        if (q < 0).any():
            row = int(np.flatnonzero(q < 0)[0])
            raise InputError(
                f"weighting 'linear' needs a non-negative quality; image {row} has {q[row]:.4g} "
                "(use the softmax or minmax transform)"
            )
        return _uniform_where_zero(q, identity, n_identities)
    if weighting.transform == "minmax":
        low = np.full(n_identities, np.inf)
        high = np.full(n_identities, -np.inf)
        np.minimum.at(low, identity, q)
        np.maximum.at(high, identity, q)
        span = (high - low)[identity]
        w = np.where(span > 0, (q - low[identity]) / np.where(span > 0, span, 1.0), 1.0)
        return np.asarray(w, np.float64)
    u = unit_quality(q) if unit is None else np.asarray(unit, np.float64)
    if u.shape != (n,) or not np.isfinite(u).all():
        raise ValueError(f"unit qualities must be {n} finite values")
    best = np.full(n_identities, -np.inf)
    np.maximum.at(best, identity, u)
    weights: np.ndarray = np.exp((u - best[identity]) / weighting.temperature)  # <= 1; the identity's best is 1
    return weights


def unit_quality(quality: np.ndarray, scaled: np.ndarray | None = None) -> np.ndarray:
    """Qualities on the [0, 1] scale of the softmax weighting: ``scaled / 100`` when the model's calibrated 0-100
    scale gave ``scaled``, else ``(q - min) / (max - min)`` over the given qualities (all zeros when they are
    equal)."""
    if scaled is not None:
        out: np.ndarray = np.asarray(scaled, np.float64) / 100.0
        return out
    q = np.asarray(quality, np.float64)
    if q.size == 0:
        return q
    lo, hi = float(q.min()), float(q.max())
    return (q - lo) / (hi - lo) if hi > lo else np.zeros_like(q)


def _uniform_where_zero(w: np.ndarray, identity: np.ndarray, n_identities: int) -> np.ndarray:
    """``w``, with ones for the images of identities whose weights sum to 0 (every quality 0)."""
    total = np.bincount(identity, weights=w, minlength=n_identities)
    return np.where(total[identity] > 0, w, 1.0)


def pool_templates(embeddings: np.ndarray, identity: np.ndarray, n_identities: int, weights: np.ndarray) -> np.ndarray:
    """``(n_identities, D)`` float32 unit templates: the L2-normalised weighted sum of each identity's rows of
    ``embeddings`` (module docstring; float64 sums in blocks of rows). An identity without images, or whose
    weighted sum is the zero vector, raises ``ValueError``."""
    n, dim = embeddings.shape
    acc = np.zeros((n_identities, dim), np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        ids = identity[rows]
        order = np.argsort(ids, kind="stable")
        ids_sorted = ids[order]
        block = embeddings[rows][order].astype(np.float64) * weights[rows][order, None]
        starts = np.flatnonzero(np.r_[True, ids_sorted[1:] != ids_sorted[:-1]])
        acc[ids_sorted[starts]] += np.add.reduceat(block, starts, axis=0)
    norms = np.linalg.norm(acc, axis=1)
    if (norms == 0).any():
        raise ValueError(f"identity {int(np.flatnonzero(norms == 0)[0])}: no images, or a zero weighted sum")
    templates: np.ndarray = (acc / norms[:, None]).astype(np.float32)
    return templates


def unit_rows(x: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float32); a zero or non-finite row raises ``ValueError`` naming it."""
    x64 = np.asarray(x, np.float64)
    norms = np.linalg.norm(x64, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise ValueError(f"{what}: zero or non-finite vector in row {int(np.flatnonzero(bad)[0])}")
    unit: np.ndarray = (x64 / norms[:, None]).astype(np.float32)
    return unit
