"""safetensors: backbone weights with qualiface's JSON header (``format`` = ``qualiface.safetensors/1``, the model
card under ``qualiface.card``), or a foreign file holding an official state dict (its layout detected from the
keys, as for a torch file)."""

from __future__ import annotations

import json
from typing import Any

from qualiface.models.card import CardError, ModelCard
from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat, detect_torch_format
from qualiface.models.formats.common import LoadRequest, ModelLoadError, build_and_load, finish
from qualiface.registry import MODEL_FORMATS

SAFETENSORS_FORMAT = "qualiface.safetensors/1"


@MODEL_FORMATS.register("safetensors")
class Safetensors(ModelFormat):
    name = "safetensors"
    container = "safetensors"
    description = "safetensors weights with a qualiface model card, or a foreign state dict"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        from safetensors import safe_open

        path = request.path
        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = fh.metadata() or {}
                state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from None
        if metadata.get("format") != SAFETENSORS_FORMAT or "qualiface.card" not in metadata:
            if metadata.get("format") == SAFETENSORS_FORMAT:
                raise ModelLoadError(f"{path}: qualiface safetensors file without its model card (qualiface.card)")
            return detect_torch_format(state, path).load(state, request)  # an official state dict
        try:
            card = ModelCard.from_json(metadata["qualiface.card"], where=f"{path}: model card")
        except CardError as exc:
            raise ModelLoadError(str(exc)) from None
        arch = request.arch or card.architecture
        if arch is None:
            raise ModelLoadError(f"{path}: the model card names no architecture")
        kwargs = dict(card.architecture_kwargs)
        backbone = build_and_load(arch, kwargs, state, request, cls.name)
        model = finish(
            backbone,
            request,
            cls.name,
            arch,
            preprocessing=card.preprocessing,
            quality=card.quality,
            thresholds=card.thresholds,
            provenance=card.provenance,
            licence=card.licence,
            name=card.name,
            info={"source_format": card.provenance.get("exported_from", card.source_format)},
        )
        return model


def safetensors_metadata(card: ModelCard) -> dict[str, str]:
    """The header a qualiface safetensors file carries."""
    return {"format": SAFETENSORS_FORMAT, "qualiface.card": json.dumps(card.to_dict(), allow_nan=False)}
