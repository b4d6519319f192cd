"""insightface arcface_torch: ``model.pt`` / ``backbone.pth``, a plain state dict of iResNet-18..200 or
MobileFaceNet(-large); RGB ``(x/255 − 0.5)/0.5``, flip fusion ``sum``; no quality output."""

from __future__ import annotations

import re
from typing import Any

from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    IRESNET_KEYS,
    MBF_KEYS,
    LoadRequest,
    build_and_load,
    finish,
    infer_iresnet,
    infer_mbf,
    state_dict_of,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"}


@MODEL_FORMATS.register("insightface")
class InsightFace(ModelFormat):
    name = "insightface"
    aliases = ("arcface_torch", "arcface", "insightface_iresnet", "insightface_mbf", "mbf")
    layout = re.compile(rf"^({IRESNET_KEYS}|{MBF_KEYS})$")
    description = "insightface arcface_torch iResNet / MobileFaceNet state dict (RGB ±1, flip sum)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        state = state_dict_of(obj)
        arch = request.arch
        if (arch or "").startswith("mobilefacenet") or (arch is None and any(k.startswith("conv_sep.") for k in state)):
            name, kwargs = infer_mbf(state, request.path)
            name = arch or name
        else:
            name, kwargs = infer_iresnet(state, request.path, arch, cls.name)
        backbone = build_and_load(name, kwargs, state, request, cls.name)
        return finish(backbone, request, cls.name, name, preprocessing=PREPROCESSING)
