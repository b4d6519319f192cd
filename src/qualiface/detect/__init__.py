"""Face detection with five landmarks and alignment of photos to ArcFace 112x112 crops.

:class:`YuNetDetector` (the OpenCV Zoo YuNet model shipped in ``weights/``, run by onnxruntime) is the default
:class:`Detector`; any object with a ``detect(image) -> list[Detection]`` method can replace it.
:func:`align_faces` turns image files into aligned crops and reports every file that gives none.
"""

from qualiface.detect.base import Detection, Detector
from qualiface.detect.faces import FaceAlignError, FaceFailure, FaceSet, align_detection, align_faces, align_image
from qualiface.detect.yunet import YuNetDetector, default_yunet_path

__all__ = [
    "Detection",
    "Detector",
    "FaceAlignError",
    "FaceFailure",
    "FaceSet",
    "YuNetDetector",
    "align_detection",
    "align_faces",
    "align_image",
    "default_yunet_path",
]
