"""insightface arcface_torch: ``model.pt`` / ``backbone.pth``, a plain state dict of iResNet-18..200,
MobileFaceNet(-large) or a ViT (``vit_t`` ... ``vit_h``); RGB ``(x/255 − 0.5)/0.5``, flip fusion ``sum``; no quality
output."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

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
    mismatch,
    state_dict_of,
)
from qualiface.registry import MODEL_FORMATS

PREPROCESSING = {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"}

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
VIT_KEYS = (
    r"(pos_embed|mask_token|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm[12]\.(weight|bias)|attn\.qkv\.weight|attn\.proj\.(weight|bias)|mlp\.fc[12]\.(weight|bias))"
    rf"|feature\.[02]\.weight|feature\.[13]\.{_BN})"
)
#: (token width, blocks) -> name; the released WebFace42M checkpoints come from the ``*_dp005_*`` configs (drop path
#: and masking act in training only, so the names of one size give the same outputs).
VIT_ARCHS = {
    (256, 12): "vit_t_dp005_mask0",
    (512, 12): "vit_s_dp005_mask_0",
    (512, 24): "vit_b_dp005_mask_005",
    (768, 24): "vit_l_dp005_mask_005",
    (1024, 48): "vit_h",
}


def infer_vit(state: Mapping[str, Tensor], path: Path, arch: str | None) -> tuple[str, dict[str, Any]]:
    """Registered ViT name from the token width and the block count; ``embedding_dim``, ``patch_size`` and
    ``input_size`` from ``feature.2``, the patch convolution and ``pos_embed`` (the head count is not in the weights:
    every arcface_torch ViT has 8)."""
    kwargs: dict[str, Any] = {}
    if (out := state.get("feature.2.weight")) is not None and out.ndim == 2:
        kwargs["embedding_dim"] = int(out.shape[0])
    proj, pos = state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if proj is not None and pos is not None and proj.ndim == 4 and pos.ndim == 3:
        patch, grid = int(proj.shape[-1]), math.isqrt(int(pos.shape[1]))
        if grid * grid == int(pos.shape[1]) and grid != 112 // max(patch, 1):
            kwargs.update(patch_size=patch, input_size=grid * patch)
    if arch is not None:
        return arch, kwargs
    width = int(pos.shape[-1]) if pos is not None else 0
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    name = VIT_ARCHS.get((width, depth))
    if name is None:
        sizes = ", ".join(f"{n} (d {w}, {b} blocks)" for (w, b), n in VIT_ARCHS.items())
        raise mismatch(
            path, "insightface", [], [], list(state), what=f"ViT d {width}, {depth} blocks match none of {sizes}"
        )
    return name, kwargs


@MODEL_FORMATS.register("insightface")
class InsightFace(ModelFormat):
    name = "insightface"
    aliases = ("arcface_torch", "arcface", "insightface_iresnet", "insightface_mbf", "mbf")
    layout = re.compile(rf"^({IRESNET_KEYS}|{MBF_KEYS}|{VIT_KEYS})$")
    description = "insightface arcface_torch iResNet / MobileFaceNet / ViT state dict (RGB ±1, flip sum)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        state = state_dict_of(obj)
        arch = request.arch
        if (arch or "").startswith("vit") or (arch is None and "pos_embed" in state):
            name, kwargs = infer_vit(state, request.path, arch)
        elif (arch or "").startswith("mobilefacenet") or (
            arch is None and any(k.startswith("conv_sep.") for k in state)
        ):
            name, kwargs = infer_mbf(state, request.path)
            name = arch or name
        else:
            name, kwargs = infer_iresnet(state, request.path, arch, cls.name)
        backbone = build_and_load(name, kwargs, state, request, cls.name)
        return finish(backbone, request, cls.name, name, preprocessing=PREPROCESSING)
