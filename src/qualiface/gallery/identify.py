"""Search: every probe face against the gallery's templates, top-k identities and a quality-aware decision.

Per probe face: the ``k`` identities whose templates are most similar (cosine), each with its similarity and
calibrated confidence, and a decision on the best one by :class:`qualiface.decisions.DecisionPolicy` (the model's
calibrated threshold, confidence and quality floor): ``match`` (the probe is that identity), ``non-match`` (the
probe is none of the gallery's identities, as far as the threshold can tell), ``abstain`` (the probe's quality is
below the model's floor, or its uncertainty above the bound: no decision is safe) or ``undecided`` (no threshold:
calibrate the model or pass one). ``identity`` is the best identity for a match and ``None`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qualiface.detect.faces import FaceSet
from qualiface.gallery.faiss_index import INDEX_KINDS, FaissIndex, IndexKind
from qualiface.gallery.search import top_k
from qualiface.gallery.store import Gallery
from qualiface.gallery.templates import unit_rows

#: Largest ``k`` a search returns.
MAX_TOP_K = 1000


@dataclass
class Candidate:
    """One of a probe's best identities: ``rank`` (1 = best), ``identity``, ``similarity`` (cosine to the
    template), ``confidence`` (P(genuine | similarity), ``None`` without a calibration) and ``images`` (enrolled
    images behind the template)."""

    rank: int
    identity: str
    similarity: float
    confidence: float | None
    images: int


@dataclass
class ProbeResult:
    """The answer for one probe face (module docstring)."""

    file: str
    face_index: int
    identity: str | None
    decision: dict[str, Any]
    candidates: list[Candidate]
    quality: float | None = None
    quality_scaled: float | None = None
    box: list[float] | None = None
    detector_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "face_index": self.face_index,
            "box": self.box,
            "detector_score": self.detector_score,
            "quality": self.quality,
            "quality_scaled": self.quality_scaled,
            "identity": self.identity,
            "decision": self.decision,
            "candidates": [vars(c) for c in self.candidates],
        }


class GalleryIndex:
    """The gallery's templates behind one search kind: ``"exact"`` (NumPy, :func:`qualiface.gallery.search.
    top_k`), ``"faiss"`` or ``"faiss-hnsw"`` (:mod:`qualiface.gallery.faiss_index`)."""

    def __init__(self, templates: np.ndarray, kind: IndexKind = "exact") -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index {kind!r}; use one of {', '.join(INDEX_KINDS)}")
        self.kind = kind
        self.templates = templates
        self._faiss = FaissIndex(templates, kind) if kind != "exact" else None

    def search(self, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``scores`` and ``indices`` ``(P, min(k, G))``, best first (``-1`` where an approximate index found
        fewer)."""
        if self._faiss is not None:
            return self._faiss.search(probes, k)
        return top_k(probes, self.templates, k)


def check_top_k(k: int) -> int:
    """``k`` when in ``[1, MAX_TOP_K]``; ``ValueError`` otherwise."""
    value: object = k
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
        raise ValueError(f"top-k must be an integer from 1 to {MAX_TOP_K}, got {k!r}")
    return k


def search_embeddings(
    gallery: Gallery,
    embeddings: np.ndarray,
    quality: np.ndarray | None,
    policy: Any,
    *,
    k: int = 5,
    index: GalleryIndex | None = None,
    files: list[str] | None = None,
    face_index: list[int] | None = None,
) -> list[ProbeResult]:
    """Probe embeddings ``(P, D)`` (raw or unit) against ``gallery``; ``policy`` is a
    :class:`qualiface.decisions.DecisionPolicy` (module docstring)."""
    k = check_top_k(k)
    n = embeddings.shape[0]
    if n and embeddings.shape[1] != gallery.embedding_dim:
        raise ValueError(f"probe embeddings are {embeddings.shape[1]}-d, the gallery's {gallery.embedding_dim}-d")
    if not gallery.n_identities:
        raise ValueError("the gallery has no identity to search")
    index = index or GalleryIndex(gallery.templates)
    probes = unit_rows(embeddings, "probe embeddings") if n else np.zeros((0, gallery.embedding_dim), np.float32)
    scores, rows = index.search(probes, k)
    counts = gallery.images_per_identity()
    results = []
    for p in range(n):
        q = None if quality is None or not np.isfinite(quality[p]) else float(quality[p])
        candidates = [
            Candidate(
                rank=r + 1,
                identity=gallery.identities[int(rows[p, r])],
                similarity=float(scores[p, r]),
                confidence=policy.confidence(float(scores[p, r])),
                images=int(counts[int(rows[p, r])]),
            )
            for r in range(scores.shape[1])
            if rows[p, r] >= 0
        ]
        best = candidates[0].similarity if candidates else -1.0  # an approximate index may find none
        decision = policy.decide(best, qualities=[q], names=["probe"])
        results.append(
            ProbeResult(
                file=files[p] if files else f"probe {p}",
                face_index=face_index[p] if face_index else 0,
                identity=candidates[0].identity if candidates and decision.decision == "match" else None,
                decision=decision.to_dict(),
                candidates=candidates,
                quality=q,
                quality_scaled=policy.scaled_quality(q),
            )
        )
    return results


def search_faces(
    model: Any,
    gallery: Gallery,
    faces: FaceSet,
    *,
    k: int = 5,
    policy: Any = None,
    index: GalleryIndex | None = None,
) -> list[ProbeResult]:
    """Embed ``faces`` with ``model`` (the gallery's; checked by the caller with
    :func:`~qualiface.gallery.store.check_model`) and search each in ``gallery``; ``policy`` defaults to the
    model's :meth:`qualiface.decisions.DecisionPolicy.from_model`. A probe's quality is the one decisions use
    (:func:`qualiface.use.decision_quality`: the model's trained quality, else a recognizer's embedding norm), as
    ``qualiface verify`` does, so the calibrated floor applies to it."""
    from qualiface.decisions import DecisionPolicy
    from qualiface.use import decision_quality

    policy = policy if policy is not None else DecisionPolicy.from_model(model)
    embeddings, quality, _ = decision_quality(model, faces)
    results = search_embeddings(
        gallery,
        embeddings,
        quality,
        policy,
        k=k,
        index=index,
        files=[str(path) for path, _ in faces.sources],
        face_index=[int(i) for _, i in faces.sources],
    )
    for result, detection in zip(results, faces.detections, strict=True):
        if detection is not None:
            result.box = [float(v) for v in detection.box]
            result.detector_score = float(detection.score)
    return results
