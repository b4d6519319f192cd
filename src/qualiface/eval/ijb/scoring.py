"""Scores of template pairs in bounded memory (step 5 of the IJB protocol; docs/protocols.md,
'IJB-B / IJB-C').

Scoring never materialises the templates x templates matrix: pairs are grouped by blocks of row templates and each
block is one matrix product with only the columns its pairs need (:func:`score_template_pairs`).
"""

from __future__ import annotations

import numpy as np

from qualiface.eval.ijb.pooling import ScoreType, TemplateFeatures, _progress


def _check_pair_indices(n_templates: int, idx1: np.ndarray, idx2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx1 = np.asarray(idx1)
    idx2 = np.asarray(idx2)
    if idx1.ndim != 1 or idx1.shape != idx2.shape:
        raise ValueError(f"pair index arrays must be 1-D of equal length, got {idx1.shape} and {idx2.shape}")
    if idx1.dtype.kind not in "iu" or idx2.dtype.kind not in "iu":
        raise ValueError("pair indices must be integers")
    for name, idx in (("first", idx1), ("second", idx2)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_templates):
            raise ValueError(f"{name} pair index out of range [0, {n_templates})")
    return idx1, idx2


def score_template_pairs(
    templates: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    *,
    dtype: type = np.float32,
    max_block_bytes: int = 128 * 2**20,
    progress: bool = True,
) -> np.ndarray:
    """Inner products ``<templates[idx1[k]], templates[idx2[k]]>`` for every pair ``k``, in bounded memory.

    Pairs are grouped by blocks of row templates; each block is one matrix product ``T[rows] @ T[cols].T`` with
    only the columns its pairs use, and the scores are picked from it. The row side is the pair's first template,
    or the smaller index of the two when that makes the products smaller (random pairs over all templates); no
    ``n_templates x n_templates`` matrix is formed. ``dtype`` is the product precision (float32: about 1e-7).
    """
    templates = np.asarray(templates)
    if templates.ndim != 2:
        raise ValueError(f"templates must be (T, D), got shape {templates.shape}")
    n = templates.shape[0]
    idx1, idx2 = _check_pair_indices(n, idx1, idx2)
    out: np.ndarray = np.empty(idx1.shape[0], dtype=dtype)
    if idx1.size == 0:
        return out
    index_dtype = np.int32 if n < 2**31 else np.int64
    in1 = np.bincount(idx1, minlength=n) > 0
    in2 = np.bincount(idx2, minlength=n) > 0
    n_union = int(np.count_nonzero(in1 | in2))
    if n_union * n_union / 2 < float(np.count_nonzero(in1)) * float(np.count_nonzero(in2)):
        rows_of = np.minimum(idx1, idx2)  # symmetric: only the upper triangle is needed
        cols_of = np.maximum(idx1, idx2)
        in1 = np.bincount(rows_of, minlength=n) > 0
        in2 = np.bincount(cols_of, minlength=n) > 0
    else:
        rows_of, cols_of = idx1, idx2
    rows = np.flatnonzero(in1)  # templates that head a pair, in index order
    pair_row = (np.cumsum(in1, dtype=index_dtype) - 1)[rows_of]  # position of each pair's row template in rows
    del rows_of
    itemsize = np.dtype(dtype).itemsize
    block = int(min(max(max_block_bytes // max(int(np.count_nonzero(in2)) * itemsize, 1), 64), rows.shape[0]))
    n_blocks = -(-rows.shape[0] // block)
    if n_blocks > 8:  # group the pairs by block once (radix sort of 16-bit keys) ...
        block_of_pair = (pair_row // block).astype(np.uint16 if n_blocks < 2**16 else np.int64)
        order = np.argsort(block_of_pair, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(block_of_pair, minlength=n_blocks))]
        del block_of_pair
    T: np.ndarray = np.ascontiguousarray(templates, dtype=dtype)
    mask = np.zeros(n, dtype=bool)
    for k in _progress(range(n_blocks), total=n_blocks, desc="scoring template blocks", enabled=progress):
        lo = k * block
        if n_blocks == 1:
            sel: slice | np.ndarray = slice(None)
        elif n_blocks > 8:
            sel = order[bounds[k] : bounds[k + 1]]
        else:  # ... or, for a few blocks, scan for each block's pairs
            sel = np.flatnonzero((pair_row >= lo) & (pair_row < lo + block))
        r = pair_row[sel]
        if r.size == 0:
            continue
        c = cols_of[sel]
        mask[:] = False
        mask[c] = True
        cols = np.flatnonzero(mask)
        col_pos = np.cumsum(mask, dtype=index_dtype) - 1
        product = T[rows[lo : lo + block]] @ T[cols].T
        flat = (r - lo).astype(np.int64)
        flat *= product.shape[1]
        flat += col_pos[c]
        out[sel] = np.take(product.ravel(), flat)
    return out


def score_template_pairs_gather(
    templates: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, *, dtype: type = np.float32, chunk: int = 100_000
) -> np.ndarray:
    """The row-gather way insightface scores pairs (``sum(T[a] * T[b], -1)`` in chunks); a slow reference."""
    templates = np.asarray(templates)
    idx1, idx2 = _check_pair_indices(templates.shape[0], idx1, idx2)
    T: np.ndarray = np.ascontiguousarray(templates, dtype=dtype)
    out: np.ndarray = np.empty(idx1.shape[0], dtype=dtype)
    for lo in range(0, idx1.shape[0], chunk):
        a = T[idx1[lo : lo + chunk]]
        a *= T[idx2[lo : lo + chunk]]
        out[lo : lo + chunk] = a.sum(axis=1)
    return out


def cosine_to_score(cosine: np.ndarray, score: ScoreType) -> np.ndarray:
    """``"cosine"``: unchanged; ``"arccos"``: ``1 - arccos(clip(cos, -1, 1)) / pi`` (MagFace)."""
    if score == "cosine":
        return cosine
    if score == "arccos":
        scores: np.ndarray = (1.0 - np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi).astype(cosine.dtype, copy=False)
        return scores
    raise ValueError(f"score must be 'cosine' or 'arccos', got {score!r}")


def ijb_pair_scores(
    templates: TemplateFeatures,
    pair_t1: np.ndarray,
    pair_t2: np.ndarray,
    *,
    score: ScoreType = "cosine",
    dtype: type = np.float32,
    progress: bool = True,
) -> np.ndarray:
    """Scores of the template pairs (template ids, in file order); ids without images raise ``ValueError``."""
    idx1 = templates.index_of(pair_t1, source="pair list, first template")
    idx2 = templates.index_of(pair_t2, source="pair list, second template")
    cosine = score_template_pairs(templates.features, idx1, idx2, dtype=dtype, progress=progress)
    return cosine_to_score(cosine, score)
