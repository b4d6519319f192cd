"""Face models: :func:`load_model` (qualiface, insightface, MagFace, AdaFace, CR-FIQA, ScaleFace checkpoints, ONNX,
safetensors) returning a :class:`FaceModel`; exporters to ONNX and safetensors; the standalone
:class:`~qualiface.models.onnx_recognizer.OnnxRecognizer`. onnx, onnxruntime and safetensors are imported lazily."""

from qualiface.models.export import export_onnx, export_safetensors
from qualiface.models.face_model import FaceModel
from qualiface.models.loading import (
    FORMATS,
    ModelLoadError,
    calibration_path,
    guess_format,
    load_calibration,
    load_model,
    save_calibration,
)

__all__ = [
    "FORMATS",
    "FaceModel",
    "ModelLoadError",
    "calibration_path",
    "export_onnx",
    "export_safetensors",
    "guess_format",
    "load_calibration",
    "load_model",
    "save_calibration",
]
