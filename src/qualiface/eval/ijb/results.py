"""Result types of the IJB evaluation: 1:1 verification, open-set 1:N per gallery and combined, legacy 1:N."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qualiface.eval.results import Result
from qualiface.eval.roc import comparisons_needed, not_measurable_text, rate_measurable


@dataclass
class IJBVerificationResult(Result):
    """IJB 1:1 verification: TAR at FAR (fractions) in both selection modes, AUC, EER, counts, a decimated ROC.

    ``tar_at_far`` is the insightface nearest-FPR selection (the numbers papers print, x100);
    ``tar_at_far_conservative`` the largest TAR with FAR <= target. The ROC arrays are actual ROC points
    (``drop_intermediate``), decimated to at most ``roc_points`` for export.

    Small samples (docs/protocols.md, 'Small samples'): ``tar_at_far_measurable[far]`` is ``False`` for a target
    below ``1/n_impostor`` (the value is kept; reports read ``n/m``); ``impostors_needed[far]`` is ``ceil(1/far)``.
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
    tar_at_far_measurable: dict[float, bool] = field(default_factory=dict)
    impostors_needed: dict[float, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tar_at_far_measurable:
            self.tar_at_far_measurable = {far: rate_measurable(far, self.n_impostor) for far in self.tar_at_far}
        if not self.impostors_needed:
            self.impostors_needed = {far: comparisons_needed(far) for far in self.tar_at_far}

    def rows(self) -> list[dict[str, Any]]:
        """One row per FAR target: ``far, tar_nearest, tar_conservative, measurable``."""
        return [
            {
                "far": far,
                "tar_nearest": self.tar_at_far[far],
                "tar_conservative": self.tar_at_far_conservative[far],
                "measurable": self.tar_at_far_measurable.get(far, True),
            }
            for far in self.tar_at_far
        ]

    def summary(self) -> str:
        """The insightface table row: TAR in % (``'%.2f'``) at each FAR, then the AUC; a FAR the impostor pairs
        cannot measure reads ``n/m`` and a line below says how many it needs."""
        head = " | ".join(f"{far:.0e}" for far in self.tar_at_far)
        values = " | ".join(
            f"{100 * tar:.2f}" if self.tar_at_far_measurable.get(far, True) else "n/m"
            for far, tar in self.tar_at_far.items()
        )
        text = f"FAR: {head} | AUC\nTAR: {values} | {100 * self.auc:.4f}"
        unmeasured = [far for far, ok in self.tar_at_far_measurable.items() if not ok]
        if unmeasured:
            text += f"\nn/m: FAR {', '.join(f'{f:g}' for f in unmeasured)} below 1/{self.n_impostor:,} impostor pairs"
        return text

    def report_metrics(self) -> dict[str, Any]:
        """Report cells; a TAR the impostor pairs cannot measure reads ``n/m (needs ≥ N impostor pairs, has n)``."""
        metrics = super().report_metrics()
        for far, ok in self.tar_at_far_measurable.items():
            if not ok:
                text = not_measurable_text(far, self.n_impostor)
                metrics[f"tar_at_far.{far}"] = metrics[f"tar_at_far_conservative.{far}"] = text
        return metrics


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
    fpir_measurable: np.ndarray | None = None

    def __post_init__(self) -> None:
        """``fpir_measurable[i]``: whether ``n_nonmated`` non-mated probes can measure FPIR ``fars[i]``
        (``fars[i] >= 1/n_nonmated``; docs/protocols.md, 'Small samples')."""
        if self.fpir_measurable is None:
            self.fpir_measurable = np.array([rate_measurable(float(f), self.n_nonmated) for f in self.fars])


@dataclass
class IJBIdentificationResult(Result):
    """IJB 1:N, corrected open-set protocol (``ijb_evals.py``): each gallery separately, then combined.

    ``rank[k]`` = (top-k hits summed over the galleries) / number of probes, as insightface combines them (each
    IJB probe is mated in exactly one gallery, so this is the pooled rank-k); ``tpir`` = mean of the galleries'
    TPIR at each FPIR in ``fars``; ``tpir_at_fpir`` the values at the printed FPIRs, ``tpir_at_fpir_measurable``
    whether every gallery has the ``1/FPIR`` non-mated probes the FPIR needs (the value is kept either way).
    """

    protocol: str
    n_probes: int
    rank: dict[int, float]
    tpir_at_fpir: dict[float, float]
    fars: np.ndarray
    tpir: np.ndarray
    galleries: dict[str, GalleryIdentification]
    tpir_at_fpir_measurable: dict[float, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """An FPIR is measurable when every gallery has at least ``1/FPIR`` non-mated probes."""
        if not self.tpir_at_fpir_measurable:
            self.tpir_at_fpir_measurable = {
                far: all(rate_measurable(far, g.n_nonmated) for g in self.galleries.values())
                for far in self.tpir_at_fpir
            }

    def rows(self) -> list[dict[str, Any]]:
        """One row per FPIR: the mean TPIR and each gallery's TPIR and threshold."""
        out = []
        for i, far in enumerate(self.fars.tolist()):
            row: dict[str, Any] = {"fpir": far, "tpir_mean": float(self.tpir[i])}
            row["measurable"] = all(rate_measurable(far, g.n_nonmated) for g in self.galleries.values())
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
