"""From image files to aligned ArcFace crops: detect five landmarks, fit the similarity, warp to ``size x size``.

Every input path ends up either in :attr:`FaceSet.sources` (one entry per returned face) or in
:attr:`FaceSet.failures` (with a reason and a message naming the file); nothing is skipped silently. A file with
several faces gives its largest face (box area) and is listed in :attr:`FaceSet.multiple`; with ``all_faces=True``
every face is returned (the file is still listed there). How faces are found (score threshold, smallest face,
largest side, the retries when a photo gives none) is :class:`~qualiface.detect.options.DetectorOptions`, applied by
:func:`qualiface.detect.find.find_faces`; a file whose faces were found by a retry is listed in
:attr:`FaceSet.retried` with the step. With ``aligned=True`` the files are taken as already
aligned ``size x size`` crops: no detection, and any other size is a ``wrong_size`` failure, never a resize.

The alignment is :mod:`qualiface.data.align` (insightface ``norm_crop``: Umeyama least-squares similarity without
reflection, bilinear warp with a black border), computed on the part of the image the crop actually samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from qualiface.data.align import arcface_template, similarity_transform, warp_affine
from qualiface.data.image_folder import ImageDataError, read_image
from qualiface.detect.base import Detection, Detector
from qualiface.detect.find import find_faces
from qualiface.detect.options import DetectorOptions
from qualiface.errors import InputError

__all__ = [
    "FaceAlignError",
    "FaceFailure",
    "FaceSet",
    "FailureReason",
    "align_detection",
    "align_faces",
    "align_image",
]

FailureReason = Literal["unreadable", "no_face", "wrong_size", "detector_error"]
OnError = Literal["report", "raise"]


class FaceAlignError(InputError):
    """A file could not give a face under ``on_error="raise"``; :attr:`failure` says which and why."""

    def __init__(self, failure: FaceFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class FaceFailure:
    """A file that gave no face: ``reason`` is ``"unreadable"`` (cannot be read or decoded), ``"no_face"`` (the
    detector found none), ``"wrong_size"`` (``aligned=True`` and not ``size x size``) or ``"detector_error"`` (the
    detector raised); ``message`` names the file."""

    path: Path
    reason: FailureReason
    message: str


@dataclass
class FaceSet:
    """Aligned faces and what happened to every input file.

    Attributes:
        images: ``(N, size, size, 3)`` RGB ``uint8`` aligned crops.
        sources: ``(file, face index)`` per crop; the index is the position in the detector's list (best score
            first), 0 for ``aligned=True``.
        detections: the :class:`Detection` behind each crop in original image pixels (``None`` for ``aligned=True``).
        failures: the files that gave no crop, in input order.
        multiple: ``(file, number of faces)`` for every file where the detector found more than one face.
        retried: ``(file, step)`` for every file whose faces were found by a retry (``"pad"`` or ``"upscale"``,
            :attr:`DetectorOptions.retry <qualiface.detect.options.DetectorOptions.retry>`) after the first pass
            found none.
    """

    images: np.ndarray
    sources: list[tuple[Path, int]] = field(default_factory=list)
    detections: list[Detection | None] = field(default_factory=list)
    failures: list[FaceFailure] = field(default_factory=list)
    multiple: list[tuple[Path, int]] = field(default_factory=list)
    retried: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def summary(self) -> str:
        """One line: files, faces, failures by reason, files with several faces, files found by a retry."""
        files = len({p for p, _ in self.sources} | {f.path for f in self.failures})
        by_reason: dict[str, int] = {}
        for f in self.failures:
            by_reason[f.reason] = by_reason.get(f.reason, 0) + 1
        failed = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) or "none"
        line = f"{files} files: {len(self)} faces; failures: {failed}; files with several faces: {len(self.multiple)}"
        if self.retried:
            steps: dict[str, int] = {}
            for _, step in self.retried:
                steps[step] = steps.get(step, 0) + 1
            line += f"; found on retry: {len(self.retried)} ({', '.join(f'{k} {v}' for k, v in steps.items())})"
        return line


def align_detection(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Align one face of an RGB ``uint8`` ``(H, W, 3)`` image onto the ArcFace ``size x size`` template.

    Equal to :func:`qualiface.data.align.align_face` (up to float rounding in the translation), but the warp reads
    only the window of the image that the crop samples, so large photos cost no more than small ones.
    """
    dst = arcface_template(size)
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64), dst)
    lin = matrix[:, :2]
    inv = np.linalg.inv(lin)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], dtype=np.float64)
    src = (corners - matrix[:, 2]) @ inv.T
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(src[:, 0].min()) - 1, 0, w))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - 1, 0, h))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + 2, 0, w))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + 2, 0, h))
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the image
        return np.zeros((size, size, 3), dtype=np.uint8)
    shifted = matrix.copy()
    shifted[:, 2] = matrix[:, 2] + lin @ np.array([x0, y0], dtype=np.float64)
    return warp_affine(image[y0:y1, x0:x1], shifted, (size, size))


def _default_detector(options: DetectorOptions | None = None) -> Detector:
    detector: Detector = (options if options is not None else DetectorOptions()).create()
    return detector


def align_image(
    image: np.ndarray,
    path: str | Path,
    *,
    detector: Detector | None = None,
    aligned: bool = False,
    all_faces: bool = False,
    size: int = 112,
    options: DetectorOptions | None = None,
) -> FaceSet:
    """The faces of one decoded RGB ``uint8`` image, as :func:`align_faces` does for each file; ``path`` names the
    image in :class:`FaceSet` and in failure messages (a file name, or e.g. a request field); ``options`` as there."""
    path = Path(path)
    result = FaceSet(images=np.zeros((0, size, size, 3), dtype=np.uint8))
    crops: list[np.ndarray] = []
    if aligned:
        if image.shape[:2] != (size, size):
            message = (
                f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels; aligned input must be "
                f"{size}x{size} (run without the aligned option to detect and align it)"
            )
            result.failures.append(FaceFailure(path, "wrong_size", message))
        else:
            crops.append(image)
            result.sources.append((path, 0))
            result.detections.append(None)
    else:
        detector = detector if detector is not None else _default_detector(options)
        try:
            outcome = find_faces(image, detector, options)
        except Exception as exc:  # a pluggable detector may raise anything; report it per file
            message = f"{path}: the face detector failed ({type(exc).__name__}: {exc})"
            result.failures.append(FaceFailure(path, "detector_error", message))
            found: list[Detection] = []
        else:
            found = outcome.detections
            if not found:
                retry = (options if options is not None else DetectorOptions()).retry
                tried = f"; also tried: {', '.join(retry)}" if retry else ""
                message = f"{path}: no face found ({image.shape[1]}x{image.shape[0]} pixels{tried})"
                result.failures.append(FaceFailure(path, "no_face", message))
            elif outcome.step not in (None, "first"):
                result.retried.append((path, str(outcome.step)))
        if len(found) > 1:
            result.multiple.append((path, len(found)))
        if all_faces or not found:
            chosen: Sequence[int] = range(len(found))
        else:
            chosen = [max(range(len(found)), key=lambda i: found[i].area)]
        for index in chosen:
            crops.append(align_detection(image, found[index].landmarks, size))
            result.sources.append((path, index))
            result.detections.append(found[index])
    if crops:
        result.images = np.stack(crops)
    return result


def align_faces(
    paths: Iterable[str | Path],
    *,
    detector: Detector | None = None,
    aligned: bool = False,
    all_faces: bool = False,
    size: int = 112,
    on_error: OnError = "report",
    progress: Callable[[int, int], None] | None = None,
    options: DetectorOptions | None = None,
) -> FaceSet:
    """Read image files and return aligned ``size x size`` RGB face crops (see the module docstring).

    Args:
        paths: image files (anything Pillow decodes; greyscale is replicated to RGB).
        detector: a :class:`~qualiface.detect.base.Detector`; default ``options.create()``, a
            :class:`~qualiface.detect.yunet.YuNetDetector` with the shipped YuNet model (needs onnxruntime) and the
            options' score and NMS thresholds (a detector passed in keeps its own).
        aligned: the files are already aligned ``size x size`` crops; taken as they are.
        all_faces: return every detected face of a file instead of the largest one.
        size: crop side; the template is :func:`qualiface.data.align.arcface_template` ``(size)``.
        on_error: ``"report"`` records failures in :attr:`FaceSet.failures`; ``"raise"`` raises
            :class:`FaceAlignError` at the first failing file.
        progress: called as ``progress(done, total)`` after each file.
        options: how faces are found (:class:`~qualiface.detect.options.DetectorOptions`; default the defaults):
            smallest face, largest side given to the detector, the retries (``pad`` then ``upscale``) when a photo
            gives no face; see :mod:`qualiface.detect.find`.

    Raises:
        FaceAlignError: under ``on_error="raise"``.
        ValueError: a bad ``on_error`` or ``size``.
    """
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
    arcface_template(size)  # validates size
    files: Sequence[Path] = [Path(p) for p in paths]
    if not aligned and detector is None:
        detector = _default_detector(options)
    crops: list[np.ndarray] = []
    result = FaceSet(images=np.zeros((0, size, size, 3), dtype=np.uint8))

    def fail(path: Path, reason: FailureReason, message: str) -> None:
        failure = FaceFailure(path, reason, message)
        if on_error == "raise":
            raise FaceAlignError(failure)
        result.failures.append(failure)

    total = len(files)
    for done, path in enumerate(files, start=1):
        try:
            image = read_image(path)
        except ImageDataError as exc:
            fail(path, "unreadable", str(exc))
        else:
            faces = align_image(
                image, path, detector=detector, aligned=aligned, all_faces=all_faces, size=size, options=options
            )
            for failure in faces.failures:
                fail(failure.path, failure.reason, failure.message)
            crops.extend(faces.images)
            result.sources.extend(faces.sources)
            result.detections.extend(faces.detections)
            result.multiple.extend(faces.multiple)
            result.retried.extend(faces.retried)
        if progress is not None:
            progress(done, total)
    if crops:
        result.images = np.stack(crops)
    return result
