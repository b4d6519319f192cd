"""Face detection with five landmarks and alignment of photos to ArcFace 112x112 crops.

:class:`YuNetDetector` (the OpenCV Zoo YuNet model shipped in ``weights/``, run by onnxruntime) is the default
:class:`Detector`; any object with a ``detect(image) -> list[Detection]`` method can replace it.
:func:`align_faces` turns image files into aligned crops and reports every file that gives none;
:class:`DetectorOptions` say how faces are found (thresholds, smallest face, largest side, the retries of
:func:`find_faces` when a photo gives none).
"""

from qualiface.detect.base import Detection, Detector
from qualiface.detect.faces import FaceAlignError, FaceFailure, FaceSet, align_detection, align_faces, align_image
from qualiface.detect.find import FoundFaces, find_faces
from qualiface.detect.options import DetectorOptions
from qualiface.detect.yunet import YuNetDetector, default_yunet_path

__all__ = [
    "Detection",
    "Detector",
    "DetectorOptions",
    "FaceAlignError",
    "FaceFailure",
    "FaceSet",
    "FoundFaces",
    "YuNetDetector",
    "align_detection",
    "align_faces",
    "align_image",
    "default_yunet_path",
    "find_faces",
]
