"""Public face recognizers identified by the SHA-256 of their file bytes, with the preprocessing their own
projects document. A file found here is loaded with exactly that preprocessing, whatever its name.

Sources: OpenCV Zoo ``models/face_recognition_sface`` (Git LFS object ids; OpenCV's ``FaceRecognizerSF`` feeds
``blobFromImage(crop, 1, (112, 112), 0, swapRB=True)``: RGB, 0..255, the graph normalises itself); insightface
model packs ``buffalo_l`` / ``buffalo_s`` / ``antelopev2`` (checksums as pinned by projects that verify these
downloads; insightface's ``ArcFaceONNX`` feeds RGB ``(x − 127.5) / 127.5``, no flip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KnownModel:
    """A public model: its name, preprocessing (fields of :class:`~qualiface.backbones.base.Preprocessing`),
    licence and where it comes from."""

    name: str
    preprocessing: dict[str, Any]
    licence: str
    origin: str
    embedding_dim: int


_SFACE = {"channel_order": "RGB", "mean": (0.0,) * 3, "std": (1 / 255,) * 3, "flip_fusion": "none"}
_INSIGHTFACE = {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "none"}
_OPENCV_ZOO = "OpenCV Zoo models/face_recognition_sface"
_INSIGHTFACE_PACK = "insightface model pack {}"
_INSIGHTFACE_TERMS = "insightface pretrained models: non-commercial research only"

KNOWN_MODELS: dict[str, KnownModel] = {
    "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79": KnownModel(
        "OpenCV Zoo SFace 2021dec (fp32)", _SFACE, "Apache-2.0", _OPENCV_ZOO, 128
    ),
    "2b0e941e6f16cc048c20aee0c8e31f569118f65d702914540f7bfdc14048d78a": KnownModel(
        "OpenCV Zoo SFace 2021dec (int8)", _SFACE, "Apache-2.0", _OPENCV_ZOO, 128
    ),
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee": KnownModel(
        "OpenCV Zoo SFace 2021dec (int8bq)", _SFACE, "Apache-2.0", _OPENCV_ZOO, 128
    ),
    # The int8bq file with every constant DequantizeLinear folded into fp32 weights (same numbers), the copy that
    # plain onnxruntime runs; made as described in this project's test-data provenance notes.
    "107111c7155b7f4316fe357472ff37f5cc5c6e10a7ffdc432cd5031d78ea1c44": KnownModel(
        "OpenCV Zoo SFace 2021dec (int8bq dequantized to fp32)", _SFACE, "Apache-2.0", _OPENCV_ZOO, 128
    ),
    "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43": KnownModel(
        "insightface w600k_r50 (buffalo_l)",
        _INSIGHTFACE,
        _INSIGHTFACE_TERMS,
        _INSIGHTFACE_PACK.format("buffalo_l"),
        512,
    ),
    "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f": KnownModel(
        "insightface w600k_mbf (buffalo_s)",
        _INSIGHTFACE,
        _INSIGHTFACE_TERMS,
        _INSIGHTFACE_PACK.format("buffalo_s"),
        512,
    ),
    "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf": KnownModel(
        "insightface glintr100 (antelopev2)",
        _INSIGHTFACE,
        _INSIGHTFACE_TERMS,
        _INSIGHTFACE_PACK.format("antelopev2"),
        512,
    ),
}
