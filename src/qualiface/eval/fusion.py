"""Test-time flip fusion of embeddings (docs/protocols.md, '1:1 verification (10-fold)': the flip fusion modes).

Each mode maps the raw embeddings of the original images ``e`` and of their horizontally flipped copies ``f``
(both ``(N, D)``, not normalised) to one fused embedding per image. The result is **not** L2-normalised: its
direction is the fused embedding and its norm is the fused norm of the method (the quality signal MagFace /
AdaFace use and IJB pooling weights by). Recognition L2-normalises it (:func:`l2_normalize`).

- ``none``: ``e`` (MagFace, CR-FIQA recognition, any model evaluated without flip).
- ``sum_raw``: ``e + f`` (arcface_torch ``eval/verification.py: test``, ``eval_ijbc.py``; equals AdaFace
  ``fuse_features_with_norm(..., "pre_norm_vector_add")`` = ``normalize(Σ n_k ê_k)`` with norm ``‖e + f‖``).
- ``concat_normalised``: ``[ê, f̂]``, ``2D`` dims, norm ``√2`` (CR-FIQA ``feature_extraction``); after
  normalisation its cosine is the mean of the two per-view cosines.
- ``norm_weighted_avg``: direction ``normalize(Σ_k w_k ê_k)`` with ``w_k = n_k / Σ n``, norm ``mean(n_k)``
  (AdaFace ``utils.py: fuse_features_with_norm``, its default). The direction equals that of ``sum_raw``
  (``Σ w_k ê_k = (e + f) / Σn``); only the norm differs.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

FlipFusion = Literal["none", "sum_raw", "concat_normalised", "norm_weighted_avg"]
FLIP_FUSION_MODES: tuple[str, ...] = get_args(FlipFusion)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by ``max(‖x‖, eps)``, as a new float64 array (docs/methods.md, 'Notation and the
    head contract'; ``F.normalize`` parity; the norm is ``sqrt(einsum("ij,ij->i"))`` as in
    ``sklearn.preprocessing.normalize``)."""
    out = np.array(x, dtype=np.float64)
    out /= np.maximum(np.sqrt(np.einsum("ij,ij->i", out, out)), eps)[:, None]
    return out


def check_embeddings(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """``x`` as a validated floating ``(N, D)`` array (integers become float64, floats keep their dtype);
    ``ValueError`` naming ``name`` and the first row with NaN/inf."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array (N, D), got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected numbers, got dtype {x.dtype}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"{name}: {int(bad.any(axis=1).sum())} row(s) hold NaN or inf, first row {row}")
    return x


def fuse_flip(embeddings: np.ndarray, flipped: np.ndarray | None = None, mode: str = "sum_raw") -> np.ndarray:
    """Fuse raw embeddings of images and of their flipped copies: float64 ``(N, D)`` (``(N, 2D)`` for concat;
    ``"none"`` returns the validated input itself).

    Args:
        embeddings: raw embeddings ``e`` of the original images, ``(N, D)``.
        flipped: raw embeddings ``f`` of the horizontally flipped images, ``(N, D)``; ignored by ``"none"``,
            required by every other mode.
        mode: one of ``none``, ``sum_raw``, ``concat_normalised``, ``norm_weighted_avg`` (module docstring).

    Raises:
        ValueError: unknown mode, missing or mismatched ``flipped``, NaN/inf values.
    """
    if mode not in FLIP_FUSION_MODES:
        raise ValueError(f"flip fusion {mode!r} is unknown; choose one of {', '.join(FLIP_FUSION_MODES)}")
    e = check_embeddings(embeddings)
    if mode == "none":
        return e
    if flipped is None:
        raise ValueError(f"flip fusion {mode!r} needs the embeddings of the flipped images")
    f = check_embeddings(flipped, "flipped embeddings")
    if f.shape != e.shape:
        raise ValueError(f"flipped embeddings have shape {f.shape}, the embeddings {e.shape}")
    if mode == "sum_raw":
        summed: np.ndarray = np.add(e, f, dtype=np.float64)
        return summed
    if mode == "concat_normalised":
        return np.concatenate([l2_normalize(e), l2_normalize(f)], axis=1)
    # norm_weighted_avg (AdaFace): weights n_k / Σn on the unit vectors, then normalise; norm = mean(n_k).
    e, f = e.astype(np.float64, copy=False), f.astype(np.float64, copy=False)
    n_e = np.sqrt(np.einsum("ij,ij->i", e, e))[:, None]
    n_f = np.sqrt(np.einsum("ij,ij->i", f, f))[:, None]
    total = np.maximum(n_e + n_f, 1e-12)
    weighted = (n_e / total) * l2_normalize(e) + (n_f / total) * l2_normalize(f)
    fused: np.ndarray = l2_normalize(weighted) * ((n_e + n_f) / 2.0)
    return fused
