"""CR-FIQA ``{step}backbone.pth``: an insightface iResNet state dict with the ``qs`` branch; RGB ±1; quality =
the ``qs`` output (regressed certainty ratio)."""

from __future__ import annotations

import re
from typing import Any

from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    IRESNET_KEYS,
    LoadRequest,
    branch_quality,
    build_and_load,
    finish,
    infer_iresnet,
    state_dict_of,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "none"}


@MODEL_FORMATS.register("crfiqa")
class CRFIQA(ModelFormat):
    name = "crfiqa"
    aliases = ("cr_fiqa", "cr-fiqa")
    layout = re.compile(rf"^({IRESNET_KEYS}|qs\.(weight|bias))$")
    signature = re.compile(r"^qs\.weight$")
    description = "CR-FIQA iResNet with the qs quality branch (RGB ±1)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        state = state_dict_of(obj)
        name, kwargs = infer_iresnet(state, request.path, request.arch, cls.name)
        kwargs.update(quality_branch="cr_fiqa", features_weight_trainable=True)
        backbone = build_and_load(name, kwargs, state, request, cls.name)
        quality = branch_quality(backbone.quality_branch)
        return finish(backbone, request, cls.name, name, preprocessing=PREPROCESSING, quality=quality)
