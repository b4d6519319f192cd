"""qualiface's own models: ``model.pt`` (see :mod:`qualiface.models.model_file`, card included), a run directory
or a checkpoint folder (``rank0.pt`` of the newest complete checkpoint); backbone, arguments and preprocessing as
recorded, quality from the backbone's branch or from the head's training (MagFace, AdaFace: the norm)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from qualiface.models.card import ModelCard, ThresholdInfo, check_threshold, preprocessing_from_dict
from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import (
    LoadRequest,
    ModelLoadError,
    branch_quality,
    build_and_load,
    finish,
    head_quality,
    state_dict_of,
    torch_load,
)
from qualiface.models.model_file import MODEL_FORMAT, ModelFileError, parse_model_file
from qualiface.registry import MODEL_FORMATS


@MODEL_FORMATS.register("qualiface")
class Qualiface(ModelFormat):
    name = "qualiface"
    description = "qualiface model.pt (model card inside), run directory or checkpoint folder"

    @classmethod
    def recognise(cls, obj: Any, keys: list[str]) -> float:
        return 1.0 if isinstance(obj, Mapping) and "format" in obj else 0.0

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        if isinstance(obj, Mapping) and "format" in obj and obj.get("format") != MODEL_FORMAT:
            raise ModelLoadError(
                f"{request.path}: qualiface model file of unknown format {obj['format']!r} (expected {MODEL_FORMAT})"
            )
        try:
            model_file = parse_model_file(obj, request.path)
        except ModelFileError as exc:
            raise ModelLoadError(str(exc)) from None
        arch = request.arch or model_file.backbone
        kwargs = dict(model_file.backbone_kwargs)
        backbone = build_and_load(arch, kwargs, model_file.state_dict, request, cls.name)
        head_name = model_file.head.get("name")
        thresholds = []
        if model_file.head.get("threshold") is not None:
            value = check_threshold(model_file.head["threshold"], f"{request.path}: head threshold")
            thresholds.append(
                ThresholdInfo(value=value, kind="learned", source=f"{head_name} head, learned in training")
            )
        if model_file.card is not None:
            card = ModelCard.from_dict(model_file.card, where=f"{request.path}: model card")
            preprocessing = card.preprocessing
        else:  # written before the card existed
            card = None
            base = backbone.preprocessing
            preprocessing = (
                preprocessing_from_dict(model_file.preprocessing, base) if model_file.preprocessing else base
            )
        model = finish(
            backbone,
            request,
            cls.name,
            arch,
            preprocessing=preprocessing,
            quality=branch_quality(backbone.quality_branch) or head_quality(head_name),
            thresholds=thresholds,
            provenance={"trained_by": "qualiface", "step": model_file.step},
            info={"head": dict(model_file.head), "head_state": model_file.head_state is not None},
        )
        if card is not None:  # the recorded card, with the facts measured now (hash, file)
            model.card = replace(
                card,
                weights_sha256=model.card.weights_sha256,
                provenance={**card.provenance, "file": request.path.name},
                thresholds=card.thresholds or model.card.thresholds,
                quality=card.quality or model.card.quality,
            )
        return model

    @classmethod
    def load_checkpoint(cls, rank0: Path, request: LoadRequest) -> FaceModel:
        """The backbone of a training checkpoint (``rank0.pt``: backbone weights + resolved config)."""
        state = torch_load(rank0)
        config = state.get("config") if isinstance(state, Mapping) else None
        if not isinstance(config, Mapping) or "backbone" not in state:
            raise ModelLoadError(f"{rank0}: not a qualiface training checkpoint (no backbone / config)")
        model_cfg = config.get("model") or {}
        arch = request.arch or str(model_cfg.get("backbone"))
        kwargs = dict(model_cfg.get("kwargs") or {})
        backbone = build_and_load(
            arch, kwargs, state_dict_of({"state_dict": state["backbone"]}), request, cls.name, path=rank0
        )
        head_name = (config.get("head") or {}).get("name")
        return finish(
            backbone,
            request,
            cls.name,
            arch,
            quality=branch_quality(backbone.quality_branch) or head_quality(head_name),
            provenance={"trained_by": "qualiface", "step": state.get("step"), "checkpoint": str(rank0.parent.name)},
            info={"step": state.get("step"), "head": {"name": head_name}},
        )
