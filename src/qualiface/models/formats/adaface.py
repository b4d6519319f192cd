"""AdaFace Lightning ``.ckpt``: the ``model.`` prefix stripped (``head.*`` dropped); IR / IR-SE; BGR ±1, flip
fusion ``sum`` (its ``pre_norm_vector_add``); quality = the embedding norm its head trains."""

from __future__ import annotations

import re
from typing import Any

from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    IR_KEYS,
    LoadRequest,
    build_and_load,
    finish,
    head_quality,
    infer_ir,
    mismatch,
    state_dict_of,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "BGR", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"}


@MODEL_FORMATS.register("adaface")
class AdaFace(ModelFormat):
    name = "adaface"
    aliases = ("adaface_ir", "lightning")
    layout = re.compile(rf"^((model\.)?{IR_KEYS}|head\..+)$")
    signature = re.compile(r"^(model\.)?input_layer\.0\.weight$")
    description = "AdaFace IR / IR-SE Lightning checkpoint (BGR ±1, flip sum, quality = feature norm)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        raw = state_dict_of(obj)
        state = {k[len("model.") :]: v for k, v in raw.items() if k.startswith("model.")}
        if not state and any(k.startswith("input_layer.") for k in raw):
            state = dict(raw)  # an already stripped AdaFace state dict
        if not state:
            raise mismatch(request.path, cls.name, [], [], list(raw), what="no key starts with 'model.'")
        name, kwargs = infer_ir(state, request.path, request.arch)
        backbone = build_and_load(name, kwargs, state, request, cls.name, all_keys=list(raw))
        return finish(
            backbone,
            request,
            cls.name,
            name,
            preprocessing=PREPROCESSING,
            quality=head_quality("adaface"),
            info={"dropped_keys": [k for k in raw if not k.startswith("model.")]},
        )
