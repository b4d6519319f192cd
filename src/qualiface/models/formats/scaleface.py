"""ScaleFace ``checkpoint.pth`` = ``{backbone, scale_predictor}``: iResNet + the MLP scale head; RGB
``(x − 127.5)/128``; quality = the predicted scale. The head's activation is not stored in the checkpoint:
pass ``backbone_kwargs={"scale_activation": ...}`` when it is not the default ``sigm_mul``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    IRESNET_KEYS,
    SCALE_HEAD_KEYS,
    LoadRequest,
    branch_quality,
    build_and_load,
    finish,
    flat_keys,
    infer_iresnet,
    mismatch,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (128 / 255,) * 3, "flip_fusion": "none"}


@MODEL_FORMATS.register("scaleface")
class ScaleFace(ModelFormat):
    name = "scaleface"
    aliases = ("scale_face", "scaleface_r50")
    layout = re.compile(rf"^(backbone\.{IRESNET_KEYS}|scale_predictor\.{SCALE_HEAD_KEYS})$")
    signature = re.compile(r"^scale_predictor\.")
    description = "ScaleFace {backbone, scale_predictor} checkpoint (RGB (x-127.5)/128, quality = scale)"

    @classmethod
    def recognise(cls, obj: Any, keys: list[str]) -> float:
        if isinstance(obj, Mapping) and all(isinstance(obj.get(k), Mapping) for k in ("backbone", "scale_predictor")):
            return 1.0
        return super().recognise(obj, keys)

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        if not isinstance(obj.get("backbone"), Mapping) or not isinstance(obj.get("scale_predictor"), Mapping):
            keys = flat_keys(obj)
            raise mismatch(
                request.path,
                cls.name,
                ["backbone", "scale_predictor"],
                keys,
                keys,
                what="expected {backbone, scale_predictor}",
            )
        state = {str(k): v for k, v in obj["backbone"].items()}
        state.update({f"scale_predictor.{k}": v for k, v in obj["scale_predictor"].items()})
        name, kwargs = infer_iresnet(state, request.path, request.arch, cls.name)
        kwargs.update(quality_branch="scaleface")
        backbone = build_and_load(name, kwargs, state, request, cls.name, all_keys=flat_keys(obj))
        quality = branch_quality(backbone.quality_branch)
        return finish(backbone, request, cls.name, name, preprocessing=PREPROCESSING, quality=quality)
