"""Quality-aware decisions: match, non-match or abstain, with a calibrated confidence.

A :class:`DecisionPolicy` holds what a model's calibration says (``qualiface calibrate``, read into the card by
:func:`qualiface.models.load_model`) and decides on one similarity:

- ``"undecided"``: there is no threshold (the model has no calibrated one and none was given);
- ``"abstain"``: a face's quality is below the **quality floor** (by default the 5th percentile of the quality of
  the calibration images: the face is poorer than 95% of what the threshold was calibrated on), or a ScaleFace
  face's **uncertainty** ``1 / s(x)`` is above the **uncertainty bound** (by default the 95th percentile of the
  calibration images' uncertainty);
- else ``"match"`` when ``similarity >= threshold`` and ``"non-match"`` otherwise.

``verified`` is ``True`` / ``False`` for a match / non-match and ``None`` when the policy does not decide.
``confidence`` is P(genuine | similarity) from the calibration pairs
(:class:`~qualiface.models.card.ConfidenceCurve`), under the calibration set's share of genuine pairs or a
``prior`` given here; it is reported even when the decision abstains (it then describes a face the calibration
did not cover well), and is ``None`` without a calibration. The floor, the bound, the threshold and the prior can
each be given instead of the calibrated ones.

The threshold is the one given (an argument, or ``model.threshold = t``), else the model's calibration. A
threshold learned in training (UniTSFace's ``b / γ``) decides only when asked for with ``threshold="learned"``
(``--threshold learned``): it was learned on single-view, training-mode similarities, so what it gives on the
fused features compared here is unknown until ``qualiface calibrate`` measures it (``qualiface info`` shows it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from qualiface.errors import InputError
from qualiface.models.card import ConfidenceCurve, QualityScale, check_prior, check_threshold

DecisionKind = Literal["match", "non-match", "abstain", "undecided"]

#: Why a decision is undecided without a threshold.
NO_THRESHOLD = (
    "no threshold: the model has no calibrated one; calibrate one (qualiface calibrate), pass --threshold T, or "
    "--threshold learned for a learned one (UniTSFace)"
)
#: The value of a threshold argument (``--threshold learned``) that asks for the model's learned threshold.
LEARNED: Literal["learned"] = "learned"
#: A threshold argument: a cosine, ``"learned"`` (the model's learned threshold) or ``None`` (the model's default).
ThresholdChoice = float | Literal["learned"] | None

#: The quality method whose score is ScaleFace's scale ``s(x)``; its uncertainty is ``1 / s(x)``.
SCALEFACE = "scaleface"


@dataclass
class Decision:
    """The answer on one pair of faces.

    Attributes:
        decision: ``"match"``, ``"non-match"``, ``"abstain"`` (a face outside the calibrated quality range) or
            ``"undecided"`` (no threshold).
        verified: ``True`` for a match, ``False`` for a non-match, ``None`` otherwise (as deepface's ``verified``,
            except that it may abstain).
        similarity: Cosine similarity of the two embeddings.
        threshold: The cosine threshold (``similarity >= threshold`` is a match), or ``None``.
        threshold_source: ``"argument"``, ``"given"`` (``model.threshold = t``), ``"calibration"`` or
            ``"learned"`` (learned in training, asked for with ``threshold="learned"``), or ``None``.
        confidence: P(genuine | similarity) from the calibration pairs, or ``None`` without a calibration.
        reasons: Why it abstained or is undecided (empty for a match or a non-match).
    """

    decision: DecisionKind
    verified: bool | None
    similarity: float
    threshold: float | None
    threshold_source: str | None
    confidence: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def distance(self) -> float:
        """``1 - similarity``, deepface's cosine distance (a match is ``distance <= 1 - threshold``)."""
        return 1.0 - self.similarity

    def to_dict(self) -> dict[str, Any]:
        """The fields, with ``distance`` after ``similarity``."""
        out = asdict(self)
        return {**{k: out[k] for k in ("decision", "verified", "similarity")}, "distance": self.distance, **out}


@dataclass(frozen=True)
class DecisionPolicy:
    """How a model decides (see the module docstring); build one with :meth:`from_model`.

    Attributes:
        threshold / threshold_source: The cosine threshold and where it comes from.
        quality_floor / quality_floor_source: The raw quality below which it abstains, and what it is.
        uncertainty_bound / uncertainty_source: The uncertainty above which it abstains, and what it is.
        confidence_curve: The calibrated P(genuine | similarity), or ``None``.
        prior: A genuine share replacing the calibration set's, or ``None``.
        quality_scale: The model's raw quality onto 0–100, or ``None``.
        quality_method: The quality the floor applies to (``scaleface``: uncertainties come from it).
    """

    threshold: float | None = None
    threshold_source: str | None = None
    quality_floor: float | None = None
    quality_floor_source: str | None = None
    uncertainty_bound: float | None = None
    uncertainty_source: str | None = None
    confidence_curve: ConfidenceCurve | None = None
    prior: float | None = None
    quality_scale: QualityScale | None = None
    quality_method: str | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None:
            check_threshold(self.threshold, "threshold")
        if self.prior is not None:
            check_prior(self.prior)
        for name in ("quality_floor", "uncertainty_bound"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
                raise ValueError(f"{name} must be a finite number, got {value!r}")

    @classmethod
    def from_model(
        cls,
        model: Any,
        threshold: ThresholdChoice = None,
        quality_floor: float | None = None,
        uncertainty_bound: float | None = None,
        prior: float | None = None,
    ) -> DecisionPolicy:
        """The policy of a loaded model (:class:`~qualiface.models.FaceModel`): its threshold
        (:func:`resolve_threshold`: ``threshold="learned"`` asks for the learned one), confidence curve, quality
        scale, floor and uncertainty bound; each argument given replaces the model's."""
        card = model.card
        used, source = resolve_threshold(card, threshold)
        calibrated = card.quality_calibration
        floor, floor_source = quality_floor, "argument" if quality_floor is not None else None
        if floor is None and calibrated is not None and calibrated.floor is not None:
            floor = calibrated.floor
            n = f" {calibrated.scale.n_images}" if calibrated.scale is not None else ""
            pct = calibrated.floor_percentile
            floor_source = (
                "calibration" if pct is None else f"calibration: the {pct:g}th percentile of{n} calibration images"
            )
        bound, bound_source = uncertainty_bound, "argument" if uncertainty_bound is not None else None
        if bound is None and calibrated is not None and calibrated.uncertainty_bound is not None:
            bound = calibrated.uncertainty_bound
            pct = calibrated.uncertainty_percentile
            bound_source = "calibration" if pct is None else f"calibration: the {pct:g}th percentile of 1/s(x)"
        method = calibrated.method if calibrated is not None else card.quality_method
        return cls(
            threshold=used,
            threshold_source=source,
            quality_floor=None if floor is None else float(floor),
            quality_floor_source=floor_source,
            uncertainty_bound=None if bound is None else float(bound),
            uncertainty_source=bound_source,
            confidence_curve=card.confidence,
            prior=None if prior is None else check_prior(prior, "--prior"),
            quality_scale=calibrated.scale if calibrated is not None else None,
            quality_method=method,
        )

    # -------------------------------------------------------------------------------------------- measures

    def confidence(self, similarity: float) -> float | None:
        """P(genuine | similarity), or ``None`` without a calibrated curve (or for a similarity that is NaN)."""
        if self.confidence_curve is None or not math.isfinite(similarity):
            return None
        return float(self.confidence_curve.probability_at(similarity, self.prior))

    def scaled_quality(self, raw: float | None) -> float | None:
        """The raw quality on the fixed 0–100 scale, or ``None`` without a calibrated scale (or raw score)."""
        if self.quality_scale is None or raw is None or not math.isfinite(raw):
            return None
        return float(self.quality_scale.scaled(raw))

    def uncertainty(self, quality: float | None) -> float | None:
        """ScaleFace's uncertainty ``1 / s(x)`` of its quality score ``s(x)`` (``inf`` for ``s <= 0``); ``None``
        for other quality methods."""
        if self.quality_method != SCALEFACE or quality is None or math.isnan(quality):
            return None
        return math.inf if quality <= 0 else 1.0 / quality

    # -------------------------------------------------------------------------------------------- decision

    def decide(
        self,
        similarity: float,
        qualities: Sequence[float | None] = (),
        uncertainties: Sequence[float | None] | None = None,
        names: Sequence[str] | None = None,
    ) -> Decision:
        """Decide on one pair (or a probe against a template).

        Args:
            similarity: The cosine similarity.
            qualities: The raw quality of each face (``None`` when unknown: no floor applies to it).
            uncertainties: Each face's uncertainty; default: ScaleFace's ``1 / s(x)`` of ``qualities`` for a
                ScaleFace model, none otherwise.
            names: How the reasons name the faces (default ``face 1``, ``face 2``, ...).
        """
        similarity = float(similarity)
        labels = list(names) if names is not None else [f"face {i + 1}" for i in range(len(qualities))]
        if uncertainties is None:
            uncertainties = [self.uncertainty(q) for q in qualities]
        labels += [f"face {i + 1}" for i in range(len(labels), max(len(qualities), len(uncertainties)))]
        reasons: list[str] = []
        if self.threshold is None:
            reasons.append(NO_THRESHOLD)
        if self.quality_floor is not None:
            for label, q in zip(labels, qualities, strict=False):
                if q is not None and (math.isnan(q) or q < self.quality_floor):
                    scaled = self.scaled_quality(q)
                    on_scale = "" if scaled is None else f" ({scaled:.1f}/100)"
                    reasons.append(
                        f"{label}: quality {q:.4g}{on_scale} is below the floor {self.quality_floor:.4g} "
                        f"({self.quality_floor_source})"
                    )
        if self.uncertainty_bound is not None:
            for label, u in zip(labels, uncertainties, strict=False):
                if u is not None and (math.isnan(u) or u > self.uncertainty_bound):
                    reasons.append(
                        f"{label}: uncertainty {u:.4g} is above the bound {self.uncertainty_bound:.4g} "
                        f"({self.uncertainty_source})"
                    )
        kind: DecisionKind
        if self.threshold is None:
            kind, verified = "undecided", None
        elif reasons:
            kind, verified = "abstain", None
        else:
            verified = bool(similarity >= self.threshold)
            kind = "match" if verified else "non-match"
        return Decision(
            decision=kind,
            verified=verified,
            similarity=similarity,
            threshold=self.threshold,
            threshold_source=self.threshold_source,
            confidence=self.confidence(similarity),
            reasons=reasons,
        )

    def describe(self) -> dict[str, Any]:
        """The policy as JSON-ready facts (threshold, floor, bound, prior and where each comes from)."""
        curve = self.confidence_curve
        return {
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "quality_floor": self.quality_floor,
            "quality_floor_source": self.quality_floor_source,
            "uncertainty_bound": self.uncertainty_bound,
            "uncertainty_source": self.uncertainty_source,
            "confidence_prior": self.prior if self.prior is not None else (curve.genuine_share if curve else None),
        }


def resolve_threshold(
    card: Any, threshold: ThresholdChoice = None, what: str = "--threshold"
) -> tuple[float | None, str | None]:
    """The threshold to decide with and where it comes from.

    Args:
        card: The model's :class:`~qualiface.models.card.ModelCard`.
        threshold: A cosine (source ``"argument"``); ``"learned"`` for the model's learned threshold (source
            ``"learned"``); ``None`` for the model's default: a given one (``"given"``), else its calibration
            (``"calibration"``), else none (``(None, None)``: the decision is undecided).
        what: How errors name the argument.

    Raises:
        InputError: A threshold that is not a cosine in [-1, 1], another word than ``learned``, or ``learned`` for
            a model without a learned threshold (a ``ValueError``).
    """
    if threshold is None:
        decision = card.decision_threshold
        if decision is None:
            return None, None
        return decision.value, "calibration" if decision.kind == "calibrated" else decision.kind
    if isinstance(threshold, str):
        if threshold.strip().lower() != LEARNED:
            raise InputError(f"{what} {threshold!r}: expected a cosine in [-1, 1] or {LEARNED!r}")
        learned = card.learned_threshold
        if learned is None:
            raise InputError(
                f"{what} {LEARNED}: model {card.name!r} has no learned threshold (only UniTSFace learns one); "
                "calibrate one (qualiface calibrate) or pass a cosine"
            )
        return learned.value, LEARNED
    return check_threshold(threshold, what), "argument"


def parse_threshold(text: str | None, what: str = "--threshold") -> ThresholdChoice:
    """A threshold argument as written on a command line: a number, ``learned`` or nothing (``None``).

    Raises:
        InputError: Text that is neither a cosine in [-1, 1] nor ``learned``.
    """
    if text is None:
        return None
    if text.strip().lower() == LEARNED:
        return LEARNED
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a cosine in [-1, 1] or {LEARNED!r}") from None
    return check_threshold(value, what)


def scaled_qualities(policy: DecisionPolicy, raw: np.ndarray) -> np.ndarray | None:
    """Many raw qualities on the 0–100 scale at once (``None`` without a calibrated scale)."""
    if policy.quality_scale is None:
        return None
    return np.asarray(policy.quality_scale.scaled(np.asarray(raw, np.float64)), np.float64)
