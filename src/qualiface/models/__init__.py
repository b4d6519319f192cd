"""Face models: :func:`load_model` (qualiface, insightface, MagFace, AdaFace, CR-FIQA, ScaleFace, UniTSFace
checkpoints, ONNX, safetensors) returning a :class:`FaceModel` with its :class:`ModelCard`; the format registry
(:mod:`qualiface.models.formats`); one inference path (:func:`embed_images`); exporters to ONNX and
safetensors; calibration files bound to the model's SHA-256."""

from qualiface.models.calibration import calibration_path, load_calibration, save_calibration
from qualiface.models.card import ModelCard, QualityInfo, ThresholdInfo, parse_preprocessing
from qualiface.models.export import export_onnx, export_safetensors
from qualiface.models.face_model import FaceModel
from qualiface.models.formats import ModelLoadError, format_names, guess_format
from qualiface.models.inference import Embedded, embed_images
from qualiface.models.loading import load_model

__all__ = [
    "Embedded",
    "FaceModel",
    "ModelCard",
    "ModelLoadError",
    "QualityInfo",
    "ThresholdInfo",
    "calibration_path",
    "embed_images",
    "export_onnx",
    "export_safetensors",
    "format_names",
    "guess_format",
    "load_calibration",
    "load_model",
    "parse_preprocessing",
    "save_calibration",
]
