"""Exact top-k search of unit probes against unit templates: blockwise matrix products in float32, bounded memory.

The score of a probe ``p`` and a template ``t`` is their inner product, the cosine of the two unit vectors. Per
block of probes and block of templates the scores are one matrix product (BLAS ``sgemm`` / ``sgemv``); each block
keeps only its ``k`` best (``np.argpartition``), merged into the running best ``k``. Memory beyond the inputs is
``block_bytes`` for the scores plus ``O(P k)``, whatever the gallery size; a search reads the templates once per
block of probes, so a single probe costs about one pass over the ``G x D`` templates (the memory-bandwidth floor;
BENCHMARKS.md, 'Gallery search (issue 12)').

Within the result, equal scores are ordered by template row (the lower row first).
"""

from __future__ import annotations

import numpy as np

#: Bytes of scores held at once (one block of probes against one block of templates).
DEFAULT_BLOCK_BYTES = 64 * 1024 * 1024
#: Probes scored at once.
PROBE_BLOCK = 1024


def top_k(
    probes: np.ndarray, templates: np.ndarray, k: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best templates of every probe (module docstring).

    Args:
        probes: ``(P, D)`` unit vectors (float32 is used as is; other dtypes are converted).
        templates: ``(G, D)`` unit vectors.
        k: how many to return; at most ``G`` are (fewer columns when the gallery is smaller).
        block_bytes: bytes of scores computed at once.

    Returns:
        ``scores`` ``(P, min(k, G))`` float32, descending per row, and ``indices`` ``(P, min(k, G))`` int64,
        the templates' rows.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    probes = np.ascontiguousarray(probes, np.float32)
    templates = np.ascontiguousarray(templates, np.float32)
    if probes.ndim != 2 or templates.ndim != 2 or probes.shape[1] != templates.shape[1]:
        raise ValueError(f"probes {probes.shape} and templates {templates.shape} must be (P, D) and (G, D)")
    n_probes, n_templates = probes.shape[0], templates.shape[0]
    k = min(k, n_templates)
    scores = np.zeros((n_probes, k), np.float32)
    indices = np.zeros((n_probes, k), np.int64)
    if n_probes == 0 or k == 0:
        return scores, indices
    for p0 in range(0, n_probes, PROBE_BLOCK):
        block = probes[p0 : p0 + PROBE_BLOCK]
        rows = max(k, block_bytes // (4 * block.shape[0]))
        best_s = np.full((block.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((block.shape[0], 0), np.int64)
        for g0 in range(0, n_templates, rows):
            s = block @ templates[g0 : g0 + rows].T
            if s.shape[1] > k:
                part = np.argpartition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k :]
                s = np.take_along_axis(s, part, axis=1)
                idx = part + g0
            else:
                idx = np.broadcast_to(np.arange(g0, g0 + s.shape[1]), s.shape)
            best_s, best_i = _keep_best(np.hstack([best_s, s]), np.hstack([best_i, idx]), k)
        order = np.lexsort((best_i, -best_s), axis=1)
        scores[p0 : p0 + block.shape[0]] = np.take_along_axis(best_s, order, axis=1)
        indices[p0 : p0 + block.shape[0]] = np.take_along_axis(best_i, order, axis=1)
    return scores, indices


def _keep_best(s: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row (unordered), the lower index winning a tie at the cut."""
    if s.shape[1] <= k:
        return s, idx
    order = np.lexsort((idx, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(idx, order, axis=1)
