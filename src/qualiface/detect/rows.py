"""Detections as table rows: what ``qualiface detect`` writes (CSV or JSON), one row per face.

Columns (:data:`COLUMNS`): ``file``, ``face_index`` (position in the detector's list, best score first), ``score``,
the box ``x1, y1, x2, y2``, the five landmarks ``left_eye_x, left_eye_y, right_eye_x, right_eye_y, nose_x, nose_y,
left_mouth_x, left_mouth_y, right_mouth_x, right_mouth_y`` (in the ArcFace template order; "left" is the side with
the smaller x, the subject's right), ``image_width, image_height``, and ``found_by``: ``first`` (the first pass),
``pad`` or ``upscale`` (the retry that found it; :mod:`qualiface.detect.find`). Coordinates are in the original
photo's pixels (pixel centres at integer coordinates), rounded to 0.01 pixel; the box may reach slightly outside
the photo.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.data.image_folder import ImageDataError, read_image
from qualiface.detect.base import Detection, Detector
from qualiface.detect.faces import FaceFailure, FaceSet, align_image
from qualiface.detect.options import DetectorOptions

__all__ = ["COLUMNS", "LANDMARK_NAMES", "detect_rows", "face_row", "rows_to_csv", "rows_to_json"]

#: The five landmarks in the ArcFace template order.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
#: One row per face, in this order.
COLUMNS = (
    "file",
    "face_index",
    "score",
    "x1",
    "y1",
    "x2",
    "y2",
    *(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y")),
    "image_width",
    "image_height",
    "found_by",
)


def face_row(
    path: str | Path, index: int, detection: Detection, image_size: tuple[int, int], found_by: str
) -> dict[str, Any]:
    """The row of one face; ``image_size`` is ``(width, height)``."""
    row: dict[str, Any] = {"file": str(path), "face_index": int(index), "score": round(float(detection.score), 4)}
    row.update({k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), detection.box, strict=True)})
    for name, (x, y) in zip(LANDMARK_NAMES, np.asarray(detection.landmarks, dtype=np.float64), strict=True):
        row[f"{name}_x"], row[f"{name}_y"] = round(float(x), 2), round(float(y), 2)
    row["image_width"], row["image_height"] = int(image_size[0]), int(image_size[1])
    row["found_by"] = found_by
    return row


def detect_rows(
    paths: Sequence[str | Path],
    *,
    options: DetectorOptions | None = None,
    detector: Detector | None = None,
    all_faces: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], FaceSet]:
    """The rows of every face in ``paths`` (photo order, faces best score first) and what happened to each file.

    The :class:`~qualiface.detect.faces.FaceSet` has the sources, detections, failures, files with several faces
    and files found by a retry, but no crops (``images`` is empty): one photo is held at a time.

    Args:
        paths: image files.
        options: how faces are found (default the defaults); ``detector`` default ``options.create()``.
        detector: replaces the detector (keeps its own thresholds).
        all_faces: every face of a photo (default), else the largest.
        progress: called as ``progress(done, total)`` after each file.
    """
    options = options if options is not None else DetectorOptions()
    detector = detector if detector is not None else options.create()
    report = FaceSet(images=np.zeros((0, 112, 112, 3), dtype=np.uint8))
    rows: list[dict[str, Any]] = []
    for done, item in enumerate(paths, start=1):
        path = Path(item)
        try:
            image = read_image(path)
        except ImageDataError as exc:
            report.failures.append(FaceFailure(path, "unreadable", str(exc)))
        else:
            faces = align_image(image, path, detector=detector, all_faces=all_faces, options=options)
            found_by = dict(faces.retried).get(path, "first")
            size = (image.shape[1], image.shape[0])
            for (source, index), detection in zip(faces.sources, faces.detections, strict=True):
                assert detection is not None  # detection always gives one
                rows.append(face_row(source, index, detection, size, found_by))
            report.sources.extend(faces.sources)
            report.detections.extend(faces.detections)
            report.failures.extend(faces.failures)
            report.multiple.extend(faces.multiple)
            report.retried.extend(faces.retried)
        if progress is not None:
            progress(done, len(paths))
    return rows, report


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV text with a header of :data:`COLUMNS` (a header alone when there is no row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rows_to_json(rows: Sequence[dict[str, Any]], faces: FaceSet, options: DetectorOptions) -> str:
    """``{"detector": options, "files": n, "faces": [row, ...], "failures": [{"file", "reason", "message"}]}``."""
    files = len({p for p, _ in faces.sources} | {f.path for f in faces.failures})
    record = {
        "detector": options.to_dict(),
        "files": files,
        "faces": list(rows),
        "failures": [{"file": str(f.path), "reason": f.reason, "message": f.message} for f in faces.failures],
    }
    return json.dumps(record, indent=1) + "\n"
