"""Result types of the IJB evaluation: 1:1 verification, open-set 1:N per gallery and combined, legacy 1:N."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qualiface.eval.results import Result


@dataclass
class IJBVerificationResult(Result):
    """IJB 1:1 verification: TAR at FAR (fractions) in both selection modes, AUC, EER, counts, a decimated ROC.

    ``tar_at_far`` is the insightface nearest-FPR selection (the numbers papers print, x100);
    ``tar_at_far_conservative`` the largest TAR with FAR <= target. The ROC arrays are actual ROC points
    (``drop_intermediate``), decimated to at most ``roc_points`` for export.
    """

    tar_at_far: dict[float, float]
    tar_at_far_conservative: dict[float, float]
    auc: float
    eer: float
    eer_threshold: float
    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_templates: int
    score_type: str
    pooling: dict[str, Any]
    roc_fpr: np.ndarray = field(repr=False)
    roc_tpr: np.ndarray = field(repr=False)
    roc_thresholds: np.ndarray = field(repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One row per FAR target: ``far, tar_nearest, tar_conservative``."""
        return [
            {"far": far, "tar_nearest": self.tar_at_far[far], "tar_conservative": self.tar_at_far_conservative[far]}
            for far in self.tar_at_far
        ]

    def summary(self) -> str:
        """The insightface table row: TAR in % (``'%.2f'``) at each FAR, then the AUC."""
        head = " | ".join(f"{far:.0e}" for far in self.tar_at_far)
        values = " | ".join(f"{100 * tar:.2f}" for tar in self.tar_at_far.values())
        return f"FAR: {head} | AUC\nTAR: {values} | {100 * self.auc:.4f}"


@dataclass
class GalleryIdentification(Result):
    """Open-set 1:N on one gallery, insightface ``evaluation_1N`` (``ijb_evals.py``) definitions.

    ``rank[k]`` = mated probes whose mate ranks in the top k / mated probes; ``tpir[i]`` at ``fars[i]``: mated probes
    whose mated score beats every non-mated gallery score **and** exceeds ``thresholds[i]`` (the
    ``max(int(n_nonmated * far) - 1, 0)``-th largest of the non-mated probes' maximum scores, 0-based:
    :func:`qualiface.eval.roc.threshold_at_fmr` with ``rule="ijb_evals"``) / mated probes.
    """

    name: str
    n_gallery: int
    n_mated: int
    n_nonmated: int
    rank_hits: dict[int, int]
    rank: dict[int, float]
    fars: np.ndarray
    thresholds: np.ndarray
    tpir: np.ndarray


@dataclass
class IJBIdentificationResult(Result):
    """IJB 1:N, corrected open-set protocol (``ijb_evals.py``): each gallery separately, then combined.

    ``rank[k]`` = (top-k hits summed over the galleries) / number of probes, as insightface combines them (each
    IJB probe is mated in exactly one gallery, so this is the pooled rank-k); ``tpir`` = mean of the galleries'
    TPIR at each FPIR in ``fars``; ``tpir_at_fpir`` the values at the printed FPIRs.
    """

    protocol: str
    n_probes: int
    rank: dict[int, float]
    tpir_at_fpir: dict[float, float]
    fars: np.ndarray
    tpir: np.ndarray
    galleries: dict[str, GalleryIdentification]

    def rows(self) -> list[dict[str, Any]]:
        """One row per FPIR: the mean TPIR and each gallery's TPIR and threshold."""
        out = []
        for i, far in enumerate(self.fars.tolist()):
            row: dict[str, Any] = {"fpir": far, "tpir_mean": float(self.tpir[i])}
            for name, gallery in self.galleries.items():
                row[f"tpir_{name}"] = float(gallery.tpir[i])
                row[f"threshold_{name}"] = float(gallery.thresholds[i])
            out.append(row)
        return out


@dataclass
class LegacyIJB1NResult(Result):
    """IJB 1:N as the legacy insightface ``ijb_1n.py`` computes it (not the standard FPIR; PRs #1386/#1387).

    Gallery = all galleries concatenated; ``rank[k]`` = probes whose mate is in the top k / probes; at each
    ``far`` the threshold is the ``ceil(n_probes * far)``-th largest of **all** non-mated probe-gallery scores
    pooled, and ``tpir_at_fpir[far]`` = probes with mated score > threshold / probes.
    """

    protocol: str
    n_probes: int
    n_gallery: int
    rank: dict[int, float]
    tpir_at_fpir: dict[float, float]
    thresholds: dict[float, float]
