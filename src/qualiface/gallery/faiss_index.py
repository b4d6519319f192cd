"""Optional FAISS indexes over the templates (``pip install 'qualiface[faiss]'``, i.e. ``faiss-cpu``).

Two kinds, built in memory from the gallery's templates when a search asks for them (never read from a file:
FAISS' own index files are a native format this library does not parse):

- ``"faiss"``: ``IndexFlatIP``, exact inner-product search, the same candidates as the NumPy search
  (:func:`qualiface.gallery.search.top_k`) up to float rounding; FAISS' own blocked kernels and threads.
- ``"faiss-hnsw"``: ``IndexHNSWFlat`` (32 links per node, inner product, ``efConstruction`` 80, ``efSearch``
  ``max(128, 2k)``), approximate: a search visits a small part of the gallery, so it is much faster on very large
  galleries, at the price of building the graph first (minutes for a million templates on two cores) and of
  recall below 1 (measured in BENCHMARKS.md, 'Gallery search (issue 12)').
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from qualiface.errors import InputError

IndexKind = Literal["exact", "faiss", "faiss-hnsw"]
INDEX_KINDS: tuple[str, ...] = ("exact", "faiss", "faiss-hnsw")
HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def import_faiss() -> Any:
    """The ``faiss`` module; :class:`~qualiface.errors.InputError` saying how to install it when missing."""
    try:
        import faiss
    except ImportError:
        raise InputError(
            "the FAISS index needs faiss-cpu: pip install 'qualiface[faiss]' (or pip install faiss-cpu); "
            "the default --index exact needs nothing"
        ) from None
    return faiss


class FaissIndex:
    """A FAISS index over unit templates ``(G, D)`` (module docstring); :meth:`search` returns what
    :func:`qualiface.gallery.search.top_k` returns."""

    def __init__(self, templates: np.ndarray, kind: IndexKind = "faiss") -> None:
        if kind not in ("faiss", "faiss-hnsw"):
            raise InputError(f"unknown FAISS index {kind!r}; use faiss or faiss-hnsw")
        faiss = import_faiss()
        data = np.ascontiguousarray(templates, np.float32)
        dim = data.shape[1]
        if kind == "faiss":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.index.add(data)
        self.kind = kind
        self.size = data.shape[0]

    def search(self, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``scores`` ``(P, min(k, G))`` float32 descending and ``indices`` int64."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, self.size)
        query = np.ascontiguousarray(probes, np.float32)
        if k == 0 or query.shape[0] == 0:
            return np.zeros((query.shape[0], k), np.float32), np.zeros((query.shape[0], k), np.int64)
        if self.kind == "faiss-hnsw":
            self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * k)
        scores, indices = self.index.search(query, k)
        return np.asarray(scores, np.float32), np.asarray(indices, np.int64)
