"""1:N search of probes against a gallery: the one engine behind the IJB (``ijb_evals.py``, ``ijb_1n.py``;
:mod:`qualiface.eval.ijb.identification`) and TinyFace (``tinyface_helper.py``; :mod:`qualiface.eval.identification`)
identification numbers (docs/protocols.md, 'IJB-B / IJB-C' and 'TinyFace identification').

Similarities are inner products in float64, one matrix product per block of ``block`` probes (memory
``block x G``); the similarity matrix is never kept. Per probe the search keeps what every 1:N number is made of:
whether the probe has a mate (a gallery entry with its identity), its mated score, its best non-mated score and the
rank of its mate, ties counting against the probe. Two mate rules exist because the references differ where an
identity has several gallery entries:

- ``mate="first"`` (``ijb_evals.py``, ``ijb_1n.py``): the mated score is that of the *first* gallery entry of the
  identity; its rank is ``1 + #{other gallery entries with score >= mated score}``, other entries of the same
  identity included.
- ``mate="best"`` (``tinyface_helper.py``): the mated score is the best of the identity's entries; its rank is
  ``1 + #{non-mated entries with score >= mated score}``.

With one gallery entry per identity (IJB galleries) the two agree. The thresholds at a false positive
identification rate come from :func:`qualiface.eval.roc.threshold_at_fmr` applied to the non-mated probes' best
scores; :meth:`GallerySearch.detection_rate` turns them into TPIR / DIR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

MateRule = Literal["first", "best"]


@dataclass
class GallerySearch:
    """Per probe (rows in probe order): ``mated`` (the gallery holds its identity), ``mate_score`` (the mated
    score, ``-inf`` without a mate), ``nonmate_max`` (the best score of a gallery entry of another identity,
    ``-inf`` when there is none) and ``rank`` (1-based rank of the mate; ``G + 1`` without a mate).
    ``top_nonmated`` holds the highest non-mated probe-gallery scores pooled over all probes, descending, when
    :func:`search_gallery` was asked for them (``top_nonmated=k``)."""

    mated: np.ndarray
    mate_score: np.ndarray
    nonmate_max: np.ndarray
    rank: np.ndarray
    top_nonmated: np.ndarray

    @property
    def n_mated(self) -> int:
        """Probes with a mate in the gallery."""
        return int(self.mated.sum())

    def rank_hits(self, k: int) -> int:
        """Mated probes whose mate ranks in the top ``k``."""
        return int(np.count_nonzero(self.rank[self.mated] <= k))

    def detection_rate(
        self, thresholds: np.ndarray, *, accept: Literal[">", ">="], within: int | Literal["nonmated"]
    ) -> np.ndarray:
        """Fraction of the mated probes detected and identified at each of ``thresholds``: the mated score is
        accepted (``> t`` or ``>= t``, ``accept``) and the mate is identified: ``within=k``, it ranks in the top k
        (TinyFace DIR(k)); ``within="nonmated"``, it beats every non-mated gallery score strictly
        (``ijb_evals.py``)."""
        pos = self.mate_score[self.mated]
        best_other = self.nonmate_max[self.mated]
        identified = pos > best_other if within == "nonmated" else self.rank[self.mated] <= within
        t = np.asarray(thresholds)[None, :]
        passed = pos[:, None] > t if accept == ">" else pos[:, None] >= t
        rate: np.ndarray = (identified[:, None] & passed).sum(axis=0) / self.n_mated
        return rate


def first_mate(probe_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """Index of the first gallery entry with the probe's identity, -1 when there is none."""
    unique, first = np.unique(gallery_ids, return_index=True)
    pos = np.searchsorted(unique, probe_ids).clip(0, unique.shape[0] - 1)
    mate: np.ndarray = np.where(unique[pos] == probe_ids, first[pos], -1)
    return mate


def _normalised(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{name} features: zero vector in row {int(np.flatnonzero(norms == 0)[0])}")
    unit: np.ndarray = x / norms[:, None]
    return unit


def _pool_top(best: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest of ``best`` and ``scores`` together (unordered)."""
    if scores.size > k:
        scores = np.partition(scores, scores.size - k)[scores.size - k :]
    best = np.concatenate([best, scores])
    if best.size > k:
        best = np.partition(best, best.size - k)[best.size - k :]
    return best


def search_gallery(
    probe_feats: np.ndarray,
    probe_ids: np.ndarray,
    gallery_feats: np.ndarray,
    gallery_ids: np.ndarray,
    *,
    mate: MateRule,
    normalize: bool = False,
    block: int = 512,
    top_nonmated: int = 0,
) -> GallerySearch:
    """Search every probe in the gallery (see the module docstring); inputs are checked by the caller.

    Args:
        probe_feats, gallery_feats: (P, D) and (G, D) features; scores are inner products in float64.
        probe_ids, gallery_ids: identities; a probe mates the gallery entries with an equal id.
        mate: ``"first"`` or ``"best"`` (module docstring).
        normalize: L2-normalise the gallery, then each block of probes (a zero vector raises ``ValueError``
            naming its row in the block).
        block: probes scored at a time.
        top_nonmated: also keep the ``top_nonmated`` highest non-mated (finite) scores pooled over all probes.
    """
    gallery = gallery_feats.astype(np.float64)
    if normalize:
        gallery = _normalised(gallery, "gallery")
    n_probes = probe_ids.shape[0]
    firsts = first_mate(probe_ids, gallery_ids) if mate == "first" else np.empty(0, dtype=np.int64)
    mated = np.zeros(n_probes, dtype=bool)
    mate_score = np.empty(n_probes)
    nonmate_max = np.empty(n_probes)
    rank = np.empty(n_probes, dtype=np.int64)
    best: np.ndarray = np.empty(0)
    for lo in range(0, n_probes, block):
        probe = probe_feats[lo : lo + block].astype(np.float64)
        if normalize:
            probe = _normalised(probe, "probe")
        sim = probe @ gallery.T
        same = probe_ids[lo : lo + block, None] == gallery_ids[None, :]
        others = np.where(same, -np.inf, sim)
        nonmate_max[lo : lo + block] = others.max(axis=1)
        if mate == "first":
            m = firsts[lo : lo + block]
            p = np.where(m >= 0, sim[np.arange(sim.shape[0]), m.clip(0)], -np.inf)
            mated[lo : lo + block] = m >= 0
            rank[lo : lo + block] = (sim >= p[:, None]).sum(axis=1) - (m >= 0) + 1  # other entries with >=
        else:
            p = np.where(same, sim, -np.inf).max(axis=1)
            mated[lo : lo + block] = same.any(axis=1)
            rank[lo : lo + block] = (others >= p[:, None]).sum(axis=1) + 1  # non-mated entries with >=
        mate_score[lo : lo + block] = p
        if top_nonmated:
            flat = others.ravel()
            best = _pool_top(best, flat[np.isfinite(flat)], top_nonmated)
    return GallerySearch(
        mated=mated,
        mate_score=mate_score,
        nonmate_max=nonmate_max,
        rank=rank,
        top_nonmated=np.sort(best)[::-1],
    )
