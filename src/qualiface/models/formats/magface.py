"""MagFace ``{state_dict}`` checkpoints: keys under ``^(module.)?features.(module.)?`` (the classifier is
dropped); iResNet with BatchNorm eps 2e-5; BGR ``x/255``; quality = the embedding norm its head trains."""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    IRESNET_KEYS,
    LoadRequest,
    build_and_load,
    finish,
    head_quality,
    infer_iresnet,
    mismatch,
    state_dict_of,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "BGR", "mean": (0.0,) * 3, "std": (1.0,) * 3, "flip_fusion": "none"}
_PREFIX = re.compile(r"^(module\.)?features\.(module\.)?")


@MODEL_FORMATS.register("magface")
class MagFace(ModelFormat):
    name = "magface"
    aliases = ("magface_iresnet",)
    layout = re.compile(rf"^((module\.)?features\.(module\.)?{IRESNET_KEYS}|(module\.)?fc\..+|.*parallel.*)$")
    signature = re.compile(r"^(module\.)?features\.(module\.)?conv1\.weight$")
    description = "MagFace iResNet checkpoint (BGR x/255, quality = feature norm)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        raw = state_dict_of(obj)
        state: dict[str, Tensor] = {}
        dropped: list[str] = []
        for key, value in raw.items():
            stripped = _PREFIX.sub("", key, count=1)
            if stripped != key:
                state[stripped] = value
            else:
                dropped.append(key)  # the classifier (module.fc.weight or the parallel FC)
        if not state:
            raise mismatch(
                request.path, cls.name, [], [], list(raw), what="no key starts with features. / module.features."
            )
        name, kwargs = infer_iresnet(state, request.path, request.arch, cls.name)
        kwargs.update(bn_eps=2e-5, bn_momentum=0.9, features_weight_trainable=True)
        backbone = build_and_load(name, kwargs, state, request, cls.name, all_keys=list(raw))
        return finish(
            backbone,
            request,
            cls.name,
            name,
            preprocessing=PREPROCESSING,
            quality=head_quality("magface"),
            info={"dropped_keys": dropped},
        )
