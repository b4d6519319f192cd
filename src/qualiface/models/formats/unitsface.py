"""UniTSFace ``*_checkpoint.tar`` (``{epoch, state_dict, optimizer}``): LResNetXEIR keys (a ``module.`` prefix from
``nn.DataParallel`` is stripped), the loss tensors dropped; RGB ±1, flip fusion ``sum``. The USS bias gives the
learned unified threshold ``t = b / γ`` (γ = 64, the official default)."""

from __future__ import annotations

import re
from typing import Any

from qualiface.models.card import ThresholdInfo
from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    UNITS_KEYS,
    LoadRequest,
    build_and_load,
    finish,
    infer_lresnet,
    state_dict_of,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"}
UNITSFACE_GAMMA = 64.0


@MODEL_FORMATS.register("unitsface")
class UniTSFace(ModelFormat):
    name = "unitsface"
    aliases = ("unitsface_r50",)
    layout = re.compile(rf"^(module\.)?{UNITS_KEYS}$")
    signature = re.compile(r"^(module\.)?(fc5\.weight|layer1\.0\.bn0\..+)$")
    description = "UniTSFace LResNetXEIR checkpoint (RGB ±1, flip sum, learned threshold b/64)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        state = {re.sub(r"^module\.", "", k): v for k, v in state_dict_of(obj).items()}
        losses = {k: v for k, v in state.items() if k.startswith(("sample_to_class_loss.", "sample_to_sample_loss."))}
        backbone_state = {k: v for k, v in state.items() if k not in losses}
        arch, kwargs = infer_lresnet(backbone_state, request.path, request.arch)
        backbone = build_and_load(arch, kwargs, backbone_state, request, cls.name, all_keys=list(state))
        thresholds = []
        bias = losses.get("sample_to_sample_loss.bias")
        if bias is not None and bias.numel() == 1 and 0 < float(bias) <= UNITSFACE_GAMMA:  # b <= 0: never initialised
            thresholds.append(
                ThresholdInfo(
                    value=float(bias) / UNITSFACE_GAMMA, kind="learned", source="sample_to_sample_loss.bias / 64"
                )
            )
        return finish(backbone, request, cls.name, arch, preprocessing=PREPROCESSING, thresholds=thresholds)
