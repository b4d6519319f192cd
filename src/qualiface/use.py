"""From photos to decisions: embed files, score their quality, compare two faces, calibrate a threshold.

These functions sit between the command line (``qualiface embed | quality | verify | calibrate``) and the models
(:func:`qualiface.models.load_model`) and faces (:func:`qualiface.detect.align_faces`); every file that gives no
face is reported in the result, never dropped silently.

Similarity is the cosine of the raw embeddings (with the model's flip fusion when it has one); a pair is a match
when ``similarity >= threshold``. A threshold calibrated at false-match rate ``FMR`` on ``n`` impostor pairs is
the smallest value with ``#{impostor scores >= t} <= floor(FMR · n)``
(:func:`qualiface.eval.roc.threshold_at_fmr`, ``rule="at_most"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.data.recordio import IMAGE_EXTENSIONS
from qualiface.detect.faces import FaceSet, align_faces
from qualiface.detect.options import DetectorOptions
from qualiface.eval import roc
from qualiface.models.card import check_threshold
from qualiface.models.face_model import FaceModel
from qualiface.models.inference import embed_images

#: Photo files taken from folders: the RecordIO packer's formats and the other formats Pillow reads.
IMAGE_SUFFIXES = IMAGE_EXTENSIONS | {".pgm", ".ppm", ".tif", ".tiff", ".webp"}
#: Percentile of the calibration images' quality below which a face is flagged as outside the usable range.
QUALITY_FLOOR_PERCENTILE = 5.0


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
    """Aligned crops of every file (detection + 5-point alignment, or taken as they are with ``aligned``);
    ``detector_options`` (:class:`~qualiface.detect.options.DetectorOptions`, default the defaults) say how faces
    are found, ``detector`` replaces the detector itself."""
    if not aligned and detector is None:
        detector = (detector_options or DetectorOptions()).create()
    return align_faces(
        [Path(p) for p in paths], detector=detector, aligned=aligned, all_faces=all_faces, progress=progress
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


@dataclass
class Comparison:
    """The outcome of comparing two faces."""

    similarity: float
    threshold: float | None
    threshold_source: str | None
    match: bool | None
    quality_a: float | None
    quality_b: float | None
    quality_method: str | None
    warnings: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_threshold(model: FaceModel, threshold: float | None = None) -> tuple[float | None, str | None]:
    """The threshold to decide with and where it comes from: the argument, the model's calibration, or the
    model's own learned threshold (UniTSFace)."""
    if threshold is not None:
        return check_threshold(threshold, "--threshold"), "argument"
    decision = model.card.decision_threshold
    if decision is None:
        return None, None
    return decision.value, "calibration" if decision.kind == "calibrated" else "model"


def quality_floor(model: FaceModel) -> float | None:
    """The quality below which a face is outside the range the model was calibrated on, when known."""
    if model.calibration and model.calibration.get("quality_floor") is not None:
        return float(model.calibration["quality_floor"])
    return None


def compare(model: FaceModel, faces_a: FaceSet, faces_b: FaceSet, *, threshold: float | None = None) -> Comparison:
    """Compare the first face of ``faces_a`` with the first face of ``faces_b`` (each must hold one)."""
    for name, faces in (("A", faces_a), ("B", faces_b)):
        if len(faces) == 0:
            reason = faces.failures[0].message if faces.failures else "no face"
            raise ValueError(f"image {name}: {reason}")
    emb_a, q_a = embed_faces(model, faces_a)
    emb_b, q_b = embed_faces(model, faces_b)
    similarity = float(cosine(emb_a[:1], emb_b[:1])[0])
    used, source = decision_threshold(model, threshold)
    result = Comparison(
        similarity=similarity,
        threshold=used,
        threshold_source=source,
        match=None if used is None else similarity >= used,
        quality_a=None if q_a is None else float(q_a[0]),
        quality_b=None if q_b is None else float(q_b[0]),
        quality_method=model.quality_method,
        model=model.card.stamp(),
    )
    if used is None:
        result.warnings.append(
            "no threshold: the model has none; calibrate one (qualiface calibrate) or pass --threshold"
        )
    floor = quality_floor(model)
    for name, faces, q in (("A", faces_a, result.quality_a), ("B", faces_b, result.quality_b)):
        if floor is not None and q is not None and q < floor:
            result.warnings.append(
                f"image {name} ({faces.sources[0][0]}): quality {q:.4g} is below the usable range of this model "
                f"(< {floor:.4g}, the {QUALITY_FLOOR_PERCENTILE:g}th percentile of its calibration images); "
                f"the decision is unreliable"
            )
    for name, faces in (("A", faces_a), ("B", faces_b)):
        if faces.multiple:
            result.warnings.append(f"image {name}: several faces, the largest was used")
    return result


@dataclass
class Calibration:
    """A threshold at a target false-match rate and what it achieves on the calibration pairs."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    images: FaceSet,
    index_a: np.ndarray,
    index_b: np.ndarray,
    issame: np.ndarray,
    fmr: float,
) -> Calibration:
    """Threshold at ``fmr`` from pairs of faces (``index_a``/``index_b`` into ``images``; ``-1`` = no face)."""
    keep = (index_a >= 0) & (index_b >= 0)
    embeddings, quality = embed_faces(model, images)
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
    floor = None
    span = None
    if quality is not None and quality.size:
        floor = float(np.percentile(quality, QUALITY_FLOOR_PERCENTILE))
        span = (float(np.min(quality)), float(np.max(quality)))
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
    )


def face_index(faces: FaceSet, paths: Sequence[Path]) -> np.ndarray:
    """For each path, the row of its first face in ``faces`` (``-1`` when it gave none)."""
    first: dict[Path, int] = {}
    for row, (path, _) in enumerate(faces.sources):
        first.setdefault(Path(path), row)
    return np.array([first.get(Path(p), -1) for p in paths], dtype=np.int64)
