"""From photos to decisions: embed files, score their quality, compare two faces, calibrate a model.

These functions sit between the command line (``qualiface embed | quality | verify | calibrate``) and the models
(:func:`qualiface.models.load_model`) and faces (:func:`qualiface.detect.align_faces`); every file that gives no
face is reported in the result, never dropped silently.

Similarity is the cosine of the raw embeddings (with the model's flip fusion when it has one); a pair is a match
when ``similarity >= threshold``. A threshold calibrated at false-match rate ``FMR`` on ``n`` impostor pairs is
the smallest value with ``#{impostor scores >= t} <= floor(FMR · n)``
(:func:`qualiface.eval.roc.threshold_at_fmr`, ``rule="at_most"``). :func:`compare` decides through a
:class:`~qualiface.decisions.DecisionPolicy`: match, non-match, or abstain on a face below the calibrated quality
floor, with the calibrated confidence P(genuine | similarity) (docs/decisions.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.data.recordio import IMAGE_EXTENSIONS
from qualiface.decisions import (
    LEARNED,
    NO_THRESHOLD,
    SCALEFACE,
    Decision,
    DecisionPolicy,
    ThresholdChoice,
    resolve_threshold,
)
from qualiface.detect.faces import FaceSet, align_faces
from qualiface.detect.options import DetectorOptions
from qualiface.eval import roc
from qualiface.models.calibration import ThresholdCheck, check_threshold_on_pairs, fit_confidence, fit_quality_scale
from qualiface.models.card import ConfidenceCurve, QualityInfo, QualityScale
from qualiface.models.face_model import FaceModel
from qualiface.models.inference import embed_images

#: Photo files taken from folders: the RecordIO packer's formats and the other formats Pillow reads.
IMAGE_SUFFIXES = IMAGE_EXTENSIONS | {".pgm", ".ppm", ".tif", ".tiff", ".webp"}
#: Percentile of the calibration images' quality below which a decision abstains (the default quality floor).
QUALITY_FLOOR_PERCENTILE = 5.0
#: Percentile of the calibration images' ScaleFace uncertainty ``1 / s(x)`` above which a decision abstains.
UNCERTAINTY_PERCENTILE = 95.0


def expand_photos(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (recursively, sorted); a missing path raises."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path}: folder without image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return out


def load_faces(
    paths: Sequence[str | Path],
    *,
    aligned: bool = False,
    all_faces: bool = False,
    detector: Any = None,
    detector_options: DetectorOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FaceSet:
    """Aligned crops of every file (detection + 5-point alignment, or taken as they are with ``aligned``).

    ``detector_options`` (:class:`~qualiface.detect.options.DetectorOptions`, default the defaults) say how faces are
    found: the score and NMS thresholds of the detector they build, the smallest face kept, the largest side given
    to the detector, and the retries (``pad`` then ``upscale``) when a photo gives no face; files found by a retry
    are listed in :attr:`FaceSet.retried <qualiface.detect.faces.FaceSet.retried>`. ``detector`` replaces the
    detector itself (it keeps its own thresholds; the other options still apply).
    """
    options = detector_options if detector_options is not None else DetectorOptions()
    if not aligned and detector is None:
        detector = options.create()
    return align_faces(
        [Path(p) for p in paths],
        detector=detector,
        aligned=aligned,
        all_faces=all_faces,
        progress=progress,
        options=options,
    )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of raw embeddings ``(N, D)`` (float64)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    return np.sum(a64 * b64, axis=-1) / np.maximum(norms, 1e-12)


def embed_faces(
    model: FaceModel, faces: FaceSet, *, batch_size: int = 64, untrained_quality: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings ``(N, D)`` (flip-fused when the model's family does it) and quality ``(N,)`` or ``None``
    (the model's trained quality; with ``untrained_quality`` also a recognizer's embedding norm), through the one
    inference path :func:`qualiface.models.embed_images`."""
    if len(faces) == 0:
        return np.zeros((0, model.embedding_dim), np.float32), None
    want = model.quality_method is not None or untrained_quality
    out = embed_images(
        model, faces.images, batch_size=batch_size, quality=want, allow_untrained_quality=untrained_quality
    )
    return out.fused(), out.quality


def decision_quality(
    model: FaceModel, faces: FaceSet | Sequence[np.ndarray] | np.ndarray, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray | None, QualityInfo | None]:
    """Embeddings, quality and what the quality is, for decisions and calibration: the model's trained quality,
    else the norm of a recognizer's raw embedding (the heuristic ``qualiface quality`` reports, labelled
    ``embedding_norm``), else none (a model whose embeddings are unit-length). ``faces`` is a :class:`FaceSet`
    or the aligned crops themselves."""
    images: Any = faces.images if isinstance(faces, FaceSet) else faces
    info = model.quality_info(allow_untrained=True)
    if len(images) == 0:
        return np.zeros((0, model.embedding_dim), np.float32), None, info
    try:
        out = embed_images(model, images, batch_size=batch_size, quality=True, allow_untrained_quality=True)
    except ValueError:
        if model.quality_method is not None:
            raise
        out = embed_images(model, images, batch_size=batch_size)  # unit-length output: no quality to use
        info = None
    return out.fused(), out.quality, info


@dataclass
class Comparison:
    """The outcome of comparing two faces: the :class:`~qualiface.decisions.Decision` and what it rests on.

    Attributes:
        decision: Match / non-match / abstain / undecided, similarity, threshold, confidence, reasons.
        quality: ``{"method", "source", "floor", "a": {"raw", "scaled", "uncertainty"}, "b": {...}}``.
        faces: ``{"a": {"file", "face_index", "box", "landmarks", "score"}, "b": {...}}`` (box ``[x1, y1, x2, y2]``
            and landmarks in the photo's pixels; ``None`` for aligned crops, which were not detected).
        detector: The detector and its settings, ``None`` for aligned crops.
        model: The model card's stamp.
        policy: The threshold, floor, bound and prior the decision used (:meth:`DecisionPolicy.describe`).
        warnings: Things to know about the inputs (several faces, no threshold).
    """

    decision: Decision
    quality: dict[str, Any]
    faces: dict[str, Any]
    detector: dict[str, Any] | None
    model: dict[str, Any]
    policy: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def similarity(self) -> float:
        return self.decision.similarity

    @property
    def threshold(self) -> float | None:
        return self.decision.threshold

    @property
    def threshold_source(self) -> str | None:
        return self.decision.threshold_source

    @property
    def verified(self) -> bool | None:
        return self.decision.verified

    @property
    def confidence(self) -> float | None:
        return self.decision.confidence

    @property
    def match(self) -> bool | None:
        """The threshold's answer alone, ``similarity >= threshold`` (also when the decision abstains)."""
        return None if self.threshold is None else self.similarity >= self.threshold

    @property
    def quality_method(self) -> str | None:
        method = self.quality.get("method")
        return None if method is None else str(method)

    @property
    def quality_a(self) -> float | None:
        return self.quality.get("a", {}).get("raw")

    @property
    def quality_b(self) -> float | None:
        return self.quality.get("b", {}).get("raw")

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``qualiface verify --json`` and the server's ``/verify``: the decision's fields first
        (``verified``, ``decision``, ``similarity``, ``distance``, ``threshold``, ``threshold_source``,
        ``confidence``, ``reasons``), then ``confidence_prior``, ``quality``, ``faces``, ``detector``, ``model``,
        ``warnings``; ``match``, ``quality_a``, ``quality_b``, ``quality_method`` keep the earlier keys."""
        decided = self.decision.to_dict()
        return {
            "verified": decided.pop("verified"),
            **decided,
            "confidence_prior": self.policy.get("confidence_prior"),
            "quality": self.quality,
            "faces": self.faces,
            "detector": self.detector,
            "model": self.model,
            "policy": self.policy,
            "warnings": self.warnings,
            "match": self.match,
            "quality_a": self.quality_a,
            "quality_b": self.quality_b,
            "quality_method": self.quality_method,
        }


def decision_threshold(model: FaceModel, threshold: ThresholdChoice = None) -> tuple[float | None, str | None]:
    """The threshold to decide with and where it comes from: the argument, the model's given or calibrated one,
    or, only when ``threshold="learned"``, its learned one (UniTSFace); see
    :func:`qualiface.decisions.resolve_threshold`."""
    return resolve_threshold(model.card, threshold)


def quality_floor(model: FaceModel) -> float | None:
    """The quality below which a face is outside the range the model was calibrated on, when known."""
    calibrated = model.card.quality_calibration
    if calibrated is not None and calibrated.floor is not None:
        return calibrated.floor
    if model.calibration and model.calibration.get("quality_floor") is not None:
        return float(model.calibration["quality_floor"])
    return None


def face_record(faces: FaceSet, row: int = 0) -> dict[str, Any]:
    """Where a face came from: file, face index, and the detection (box ``[x1, y1, x2, y2]``, 5 landmarks
    ``[[x, y], ...]``, score) or ``None`` for an aligned crop."""
    path, index = faces.sources[row]
    detection = faces.detections[row] if row < len(faces.detections) else None
    record: dict[str, Any] = {"file": str(path), "face_index": int(index), "box": None, "landmarks": None}
    record["score"] = None
    if detection is not None:
        record["box"] = [float(v) for v in detection.box]
        record["landmarks"] = np.asarray(detection.landmarks, np.float64).round(3).tolist()
        record["score"] = float(detection.score)
    return record


def compare(
    model: FaceModel,
    faces_a: FaceSet,
    faces_b: FaceSet,
    *,
    threshold: ThresholdChoice = None,
    policy: DecisionPolicy | None = None,
    detector: dict[str, Any] | None = None,
) -> Comparison:
    """Compare the first face of ``faces_a`` with the first face of ``faces_b`` (each must hold one) and decide.

    Args:
        model: The model.
        faces_a: The faces of the first image (:func:`load_faces`).
        faces_b: The faces of the second image.
        threshold: A cosine threshold replacing the model's, or ``"learned"`` for the model's learned one
            (ignored when ``policy`` is given).
        policy: How to decide (default :meth:`DecisionPolicy.from_model` with ``threshold``).
        detector: The detector's description for the result (``None``: aligned crops).
    """
    for name, faces in (("A", faces_a), ("B", faces_b)):
        if len(faces) == 0:
            reason = faces.failures[0].message if faces.failures else "no face"
            raise ValueError(f"image {name}: {reason}")
    policy = policy or DecisionPolicy.from_model(model, threshold=threshold)
    emb_a, q_a, info = decision_quality(model, faces_a)
    emb_b, q_b, _ = decision_quality(model, faces_b)
    similarity = float(cosine(emb_a[:1], emb_b[:1])[0])
    raw = [None if q is None else float(q[0]) for q in (q_a, q_b)]
    names = [f"image {n} ({faces.sources[0][0]})" for n, faces in (("A", faces_a), ("B", faces_b))]
    decision = policy.decide(similarity, qualities=raw, names=names)
    quality: dict[str, Any] = {
        "method": None if info is None else info.method,
        "source": None if info is None else info.source,
        "floor": policy.quality_floor,
    }
    for key, value in zip(("a", "b"), raw, strict=True):
        entry: dict[str, Any] = {"raw": value, "scaled": policy.scaled_quality(value)}
        if policy.quality_method == SCALEFACE:
            entry["uncertainty"] = policy.uncertainty(value)
        # JSON has no NaN or infinity (a ScaleFace scale of 0 is an infinite uncertainty): null, the reason says it
        quality[key] = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()}
    result = Comparison(
        decision=decision,
        quality=quality,
        faces={"a": face_record(faces_a), "b": face_record(faces_b)},
        detector=detector,
        model=model.card.stamp(),
        policy=policy.describe(),
    )
    if policy.threshold is None:
        result.warnings.append(NO_THRESHOLD)
    learned = model.card.learned_threshold
    if policy.threshold_source == LEARNED and learned is not None and not learned.measured:
        result.warnings.append(
            "the learned threshold decides, but what it gives on these features is not measured: qualiface "
            "calibrate measures its FMR and FNMR (shown by qualiface info)"
        )
    for name, faces in (("A", faces_a), ("B", faces_b)):
        if faces.multiple:
            result.warnings.append(f"image {name}: several faces, the largest was used")
    return result


@dataclass
class Calibration:
    """What labelled pairs say about a model: a threshold at a target false-match rate and what it achieves,
    the confidence curve, and the quality calibration (0–100 scale, floor, uncertainty bound)."""

    threshold: float
    fmr_target: float
    fmr: float
    fnmr: float
    n_genuine: int
    n_impostor: int
    pairs_dropped: int
    quality_floor: float | None
    quality_range: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)
    confidence: ConfidenceCurve | None = None
    quality_scale: QualityScale | None = None
    quality_floor_percentile: float = QUALITY_FLOOR_PERCENTILE
    uncertainty_bound: float | None = None
    uncertainty_percentile: float | None = None
    quality_method: str | None = None
    quality_source: str | None = None
    learned_threshold: ThresholdCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["learned_threshold"] = None if self.learned_threshold is None else self.learned_threshold.to_dict()
        return out

    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict` with the curves' knots left out (their size and meaning instead), for people."""
        out = self.to_dict()
        if self.confidence is not None:
            out["confidence"] = {
                "knots": len(self.confidence.similarity),
                "genuine_share": self.confidence.genuine_share,
                "method": self.confidence.method,
            }
        if self.quality_scale is not None:
            out["quality_scale"] = {
                "knots": len(self.quality_scale.raw),
                "n_images": self.quality_scale.n_images,
                "median": float(np.interp(50.0, self.quality_scale.percent, self.quality_scale.raw)),
                "method": self.quality_scale.method,
            }
        return out

    def record(self) -> dict[str, Any]:
        """The fields the calibration file stores beside the threshold (see :func:`qualiface.models.save_calibration`);
        values that are not finite become ``None``."""
        out: dict[str, Any] = {
            "fmr_measured": self.fmr,
            "fnmr": self.fnmr,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
            "confidence": None if self.confidence is None else asdict(self.confidence),
            "quality_method": self.quality_method,
            "quality_source": self.quality_source,
            "quality_range": None if self.quality_range is None else list(self.quality_range),
            "quality_scale": None if self.quality_scale is None else asdict(self.quality_scale),
            "quality_floor": self.quality_floor,
            "quality_floor_percentile": self.quality_floor_percentile if self.quality_floor is not None else None,
            "uncertainty_bound": self.uncertainty_bound,
            "uncertainty_percentile": self.uncertainty_percentile,
            "learned_threshold": None if self.learned_threshold is None else self.learned_threshold.to_dict(),
        }
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}


def threshold_at_fmr(impostor_scores: np.ndarray, fmr: float) -> float:
    """Smallest ``t`` with ``#{s >= t} <= floor(fmr · n)`` over the impostor scores: the calibration's checks, then
    :func:`qualiface.eval.roc.threshold_at_fmr` with ``rule="at_most"`` (see there and the module docstring)."""
    scores = np.asarray(impostor_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no impostor pairs to calibrate on")
    if not 0.0 < fmr < 1.0:
        raise ValueError(f"fmr must be in (0, 1), got {fmr}")
    return roc.threshold_at_fmr(scores, fmr, rule="at_most")


def calibrate(
    model: FaceModel,
    images: FaceSet | Sequence[np.ndarray] | np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    issame: np.ndarray,
    fmr: float,
    *,
    floor_percentile: float = QUALITY_FLOOR_PERCENTILE,
    uncertainty_percentile: float = UNCERTAINTY_PERCENTILE,
) -> Calibration:
    """Calibrate a model on pairs of faces (``index_a``/``index_b`` into ``images``, a :class:`FaceSet` or the
    aligned crops; ``-1`` = no face).

    Measures the threshold at ``fmr`` on the impostor pairs; the confidence curve P(genuine | similarity) on all
    pairs (:func:`qualiface.models.calibration.fit_confidence`); and on the quality of every face of ``images``
    (the quality decisions use, :func:`decision_quality`): the 0–100 scale
    (:func:`qualiface.models.calibration.fit_quality_scale`), the floor (its ``floor_percentile``-th percentile)
    and, for ScaleFace, the uncertainty bound (the ``uncertainty_percentile``-th percentile of ``1 / s(x)``, taken
    as ``1 /`` the ``(100 - uncertainty_percentile)``-th percentile of ``s(x)``: the same faces in reverse order).
    For a model with a learned threshold (UniTSFace), what that threshold gives on the same pairs and the same
    features as decisions (``learned_threshold``, :func:`qualiface.models.calibration.check_threshold_on_pairs`).
    """
    for name, value in (("floor percentile", floor_percentile), ("uncertainty percentile", uncertainty_percentile)):
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"the {name} must be within [0, 100], got {value}")
    keep = (index_a >= 0) & (index_b >= 0)
    embeddings, quality, info = decision_quality(model, images)
    a, b, same = index_a[keep], index_b[keep], np.asarray(issame, bool)[keep]
    scores = cosine(embeddings[a], embeddings[b])
    impostor, genuine = scores[~same], scores[same]
    threshold = threshold_at_fmr(impostor, fmr)
    warnings = []
    if impostor.size < 1.0 / fmr:
        warnings.append(
            f"only {impostor.size} impostor pairs: an FMR of {fmr:g} cannot be measured below 1/{impostor.size}; "
            f"the threshold sits just above the highest impostor score"
        )
    learned = model.card.learned_threshold
    checked = None if learned is None else check_threshold_on_pairs(scores, same, learned.value)
    confidence = None
    if genuine.size and impostor.size:
        confidence = fit_confidence(scores, same)
    else:
        warnings.append("no genuine pairs: the confidence (P(genuine | similarity)) cannot be fitted")
    floor = span = scale = bound = None
    used = quality[np.isfinite(quality)] if quality is not None else np.zeros(0)
    if used.size:
        floor = float(np.percentile(used, floor_percentile))
        span = (float(np.min(used)), float(np.max(used)))
        scale = fit_quality_scale(used)
        if info is not None and info.method == SCALEFACE:
            # 1/s ranks the faces in reverse order of s: its p-th percentile is 1 / the (100 - p)-th percentile of
            # s (taken on s, so that faces with s = 0, an infinite uncertainty, do not make it NaN)
            scale_at = float(np.percentile(used, 100.0 - uncertainty_percentile))
            if scale_at > 0:
                bound = 1.0 / scale_at
            else:
                warnings.append(
                    f"over {100 - uncertainty_percentile:g}% of the calibration images have a ScaleFace scale s(x) "
                    f"<= 0 (an infinite uncertainty): no uncertainty bound stored"
                )
    return Calibration(
        threshold=threshold,
        fmr_target=float(fmr),
        fmr=float(np.mean(impostor >= threshold)) if impostor.size else float("nan"),
        fnmr=float(np.mean(genuine < threshold)) if genuine.size else float("nan"),
        n_genuine=int(genuine.size),
        n_impostor=int(impostor.size),
        pairs_dropped=int((~keep).sum()),
        quality_floor=floor,
        quality_range=span,
        warnings=warnings,
        confidence=confidence,
        quality_scale=scale,
        quality_floor_percentile=float(floor_percentile),
        uncertainty_bound=bound if bound is not None and math.isfinite(bound) else None,
        uncertainty_percentile=float(uncertainty_percentile) if bound is not None else None,
        quality_method=None if info is None else info.method,
        quality_source=None if info is None else info.source,
        learned_threshold=checked,
    )


def face_index(faces: FaceSet, paths: Sequence[Path]) -> np.ndarray:
    """For each path, the row of its first face in ``faces`` (``-1`` when it gave none)."""
    first: dict[Path, int] = {}
    for row, (path, _) in enumerate(faces.sources):
        first.setdefault(Path(path), row)
    return np.array([first.get(Path(p), -1) for p in paths], dtype=np.int64)
