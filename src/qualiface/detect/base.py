"""The detector interface: RGB ``uint8`` images in, :class:`Detection` boxes with five landmarks out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Detection", "Detector"]


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected face in image pixel coordinates (pixel centres at integer coordinates, as in OpenCV).

    Attributes:
        box: ``(x1, y1, x2, y2)`` corners, floats (may reach slightly outside the image).
        score: detector confidence in ``[0, 1]``.
        landmarks: ``(5, 2)`` float32 ``(x, y)`` points in the ArcFace template order (docs/protocols.md, 'Face
            alignment'): left eye, right eye, nose tip, left mouth corner, right mouth corner, where "left" is the side
            with the smaller x in an upright frontal face (the subject's right).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        lmk = np.asarray(self.landmarks, dtype=np.float32)
        if lmk.shape != (5, 2):
            raise ValueError(f"landmarks must have shape (5, 2), got {lmk.shape}")
        lmk = lmk.copy()
        lmk.setflags(write=False)
        object.__setattr__(self, "landmarks", lmk)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))
        if len(self.box) != 4:
            raise ValueError(f"box must be (x1, y1, x2, y2), got {self.box}")

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        """Box area in square pixels (used to pick the largest face)."""
        return max(self.width, 0.0) * max(self.height, 0.0)


@runtime_checkable
class Detector(Protocol):
    """A face detector with five landmarks: anything with this ``detect`` method can be passed to
    :func:`qualiface.detect.faces.align_faces`."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an RGB ``uint8`` ``(H, W, 3)`` image, best score first."""
        ...
