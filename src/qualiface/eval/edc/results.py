"""Result types of the EDC / ERC functions: one curve per operating point, and the curves of one quality method."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from qualiface.eval.edc.pauc import _trapezoid_pauc, edc_pauc
from qualiface.eval.inputs import unit_interval_values
from qualiface.eval.results import Result, to_plain


@dataclass
class FixedThresholdEDC(Result):
    """One fixed-threshold EDC (docs/protocols.md, 'Fixed-threshold EDC') at one operating point.

    ``discard_fractions`` / ``error_fractions`` are the curve (with the appended point (1, 0));
    ``discard_counts`` the discard counts of the curve points without the appended one; ``error_counts[k]`` the
    errors among sorted positions >= k for every k in 0..n-1 (``dasec``'s outputs, for parity; left out of
    :meth:`to_dict` because it holds n values). ``threshold`` is in the units of the input scores.

    Small samples (docs/protocols.md, 'Small samples'): ``fmr_target`` is the FMR the threshold was set at (``None``
    for a starting error or a given threshold), ``achieved_fmr`` the FMR it gives on all ``nonmated_count``
    non-mated comparisons (``None`` without them), and ``measurable`` is ``False`` when ``fmr_target`` is below
    ``1/nonmated_count``: the threshold then sits among the few highest impostor scores and ``note`` says so.
    """

    operating_point: str
    error: str
    threshold: float
    starting_error: float
    comparison_count: int
    discard_fractions: np.ndarray
    error_fractions: np.ndarray
    discard_counts: np.ndarray
    error_counts: np.ndarray
    pauc: dict[float, float]
    area_best: dict[float, float]
    pauc_minus_best: dict[float, float]
    convention: str = "fixed_threshold"
    fmr_target: float | None = None
    achieved_fmr: float | None = None
    nonmated_count: int | None = None
    measurable: bool = True
    note: str = ""

    def partial_auc(self, discard_limit: float) -> float:
        """Stepwise pAUC up to ``discard_limit`` (:func:`edc_pauc`)."""
        return edc_pauc(self.discard_fractions, self.error_fractions, discard_limit)

    def to_dict(self) -> dict[str, Any]:
        """All fields except the per-position ``error_counts``."""
        plain = super().to_dict()
        plain.pop("error_counts", None)
        return plain

    def rows(self) -> list[dict[str, Any]]:
        """One row per curve point."""
        return [
            {"operating_point": self.operating_point, "discard_fraction": float(x), "error_fraction": float(y)}
            for x, y in zip(self.discard_fractions, self.error_fractions, strict=True)
        ]


@dataclass
class RecomputedThresholdERC(Result):
    """One ERC with the threshold re-estimated at every discard level (docs/protocols.md,
    'CR-FIQA ERC' or 'MagFace ERC').

    Per level: ``error_fractions`` (FNMR; NaN where the level keeps no mated or too few non-mated pairs, where the
    reference divides by zero or records nothing), ``thresholds`` (distance units), ``achieved_fmr`` (CR-FIQA:
    ``#{impostor d <= t}/n_imp`` the threshold was chosen by; MagFace: ``#{impostor d < τ}/n_imp``) and the kept
    counts. ``auc`` is CR-FIQA's number: ``sklearn.metrics.auc`` (trapezoidal) over the whole grid; ``pauc[L]`` is
    the trapezoidal area up to L (linear interpolation at L), not comparable with the stepwise pAUC of the fixed
    threshold (docs/protocols.md, 'pAUC').

    Small samples: ``measurable[i]`` is ``False`` at the levels whose kept non-mated pairs are fewer than
    ``1/fmr_target`` (the threshold there cannot reach the target); ``note`` explains those and the NaN levels.
    """

    convention: str
    operating_point: str
    fmr_target: float
    discard_fractions: np.ndarray
    error_fractions: np.ndarray
    thresholds: np.ndarray
    achieved_fmr: np.ndarray
    kept_counts: np.ndarray
    mated_counts: np.ndarray
    nonmated_counts: np.ndarray
    auc: float
    pauc: dict[float, float]
    measurable: np.ndarray | None = None
    note: str = ""

    def partial_auc(self, discard_limit: float) -> float:
        """Trapezoidal area up to ``discard_limit`` (at most up to the last grid point)."""
        return _trapezoid_pauc(
            self.discard_fractions, self.error_fractions, unit_interval_values("discard_limits", discard_limit)[0]
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per discard level."""
        return [
            {
                "operating_point": self.operating_point,
                "discard_fraction": float(self.discard_fractions[i]),
                "error_fraction": float(self.error_fractions[i]),
                "threshold": float(self.thresholds[i]),
                "achieved_fmr": float(self.achieved_fmr[i]),
                "kept": float(self.kept_counts[i]),
            }
            for i in range(self.discard_fractions.size)
        ]


Curve = FixedThresholdEDC | RecomputedThresholdERC


@dataclass
class EDCResult(Result):
    """EDC / ERC curves of one quality method, one curve per operating point (e.g. ``"fmr=0.001"``).

    ``protocol`` states what every EDC number must state (docs/protocols.md, 'EDC and ERC'): fixed or re-estimated
    threshold, what the discard fraction counts, whether ties are grouped, and the kind of area.
    """

    method: str
    convention: str
    protocol: str
    pair_quality: str
    higher_is_better: bool
    n_pairs: int
    n_mated: int
    n_nonmated: int
    curves: dict[str, Curve]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values; each curve through its own ``to_dict()``."""
        plain: dict[str, Any] = to_plain({f.name: getattr(self, f.name) for f in fields(self) if f.name != "curves"})
        plain["curves"] = {label: curve.to_dict() for label, curve in self.curves.items()}
        return plain

    def rows(self) -> list[dict[str, Any]]:
        """One row per curve point of every curve."""
        return [
            {"method": self.method, "convention": self.convention, **row}
            for c in self.curves.values()
            for row in c.rows()
        ]

    def summary(self) -> dict[str, Any]:
        """Scalars per operating point: starting error, pAUC (and minus A* for the fixed threshold), AUC; for an
        FMR target also the FMR achieved, the number of non-mated pairs and whether the target is measurable."""
        out: dict[str, Any] = {}
        for label, curve in self.curves.items():
            if isinstance(curve, FixedThresholdEDC):
                out[f"{label}/threshold"] = curve.threshold
                out[f"{label}/starting_error"] = curve.starting_error
                for limit, value in curve.pauc.items():
                    out[f"{label}/pauc@{limit:g}"] = value
                    out[f"{label}/pauc-best@{limit:g}"] = curve.pauc_minus_best[limit]
                if curve.fmr_target is not None:
                    out[f"{label}/achieved_fmr"] = curve.achieved_fmr
                    out[f"{label}/n_nonmated"] = curve.nonmated_count
                    out[f"{label}/measurable"] = curve.measurable
            else:
                out[f"{label}/fnmr@0"] = float(curve.error_fractions[0])
                out[f"{label}/auc"] = curve.auc
                for limit, value in curve.pauc.items():
                    out[f"{label}/pauc@{limit:g}"] = value
                out[f"{label}/achieved_fmr@0"] = float(curve.achieved_fmr[0])
                out[f"{label}/n_nonmated@0"] = int(curve.nonmated_counts[0])
                if curve.measurable is not None:
                    out[f"{label}/measurable@0"] = bool(curve.measurable[0])
        return out

    def curve_points(self, operating_point: str) -> tuple[np.ndarray, np.ndarray]:
        """``(discard_fractions, error_fractions)`` of one operating point, for plotting."""
        if operating_point not in self.curves:
            raise KeyError(f"no operating point {operating_point!r}; available: {list(self.curves)}")
        curve = self.curves[operating_point]
        return curve.discard_fractions, curve.error_fractions
