"""Export a backbone (or a loaded :class:`FaceModel`) to ONNX and to safetensors, both loadable by ``load_model``.

ONNX graph: input ``input`` ``(N, 3, H, W)`` float32, already normalised as the model's preprocessing says (no
normalisation inside the graph, as arcface_torch's ``torch2onnx.py``); outputs ``embedding`` ``(N, D)`` (raw, not
normalised) and, for a quality branch, ``quality`` ``(N,)``. The model card is written to the model's
``metadata_props`` as ``qualiface.card`` (JSON), with a readable ``qualiface.preprocessing`` line.

safetensors: the backbone weights plus a metadata header (``format`` = ``qualiface.safetensors/1``,
``qualiface.card`` = the model card as JSON).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qualiface.atomic import atomic_path
from qualiface.backbones.base import Backbone
from qualiface.models.card import ModelCard
from qualiface.models.face_model import FaceModel
from qualiface.models.formats.safetensors_file import safetensors_metadata
from qualiface.quality.branches import get_branch


class _OnnxWrapper(nn.Module):
    """``input -> (embedding, quality)`` or ``input -> embedding``."""

    def __init__(self, backbone: Any, aux_key: str | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.aux_key = aux_key

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.aux_key is None:
            return self.backbone(images)
        embeddings, aux = self.backbone.forward_aux(images)
        return embeddings, aux[self.aux_key].float()


def export_card(model: FaceModel | Backbone, container: str) -> tuple[ModelCard, nn.Module]:
    """The card an export carries (the model's, with the container as its format and where it came from) and
    the PyTorch module to export."""
    if isinstance(model, FaceModel):
        if model.module is None:
            raise ValueError(f"{model.name} is an ONNX model; only PyTorch models can be exported")
        card, module = model.card, model.module
    elif isinstance(model, Backbone):
        card, module = FaceModel.from_backbone(model).card, model
    else:
        raise TypeError(f"expected a FaceModel or a Backbone, got {type(model).__name__}")
    provenance = {**card.provenance, "exported_from": card.source_format}
    if card.weights_sha256:
        provenance["exported_from_sha256"] = card.weights_sha256
    return replace(card, source_format=container, provenance=provenance, weights_sha256=None), module


def export_onnx(
    model: FaceModel | Backbone,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    with_quality: bool = True,
) -> Path:
    """Write ``model`` as ONNX (see the module docstring for the graph and metadata); returns the path.

    Args:
        model: A PyTorch :class:`FaceModel` or a :class:`Backbone`.
        path: Output ``.onnx`` file (written atomically).
        opset: ONNX opset.
        dynamic_batch: Make the batch dimension symbolic (``batch``); else fixed at 1.
        with_quality: Add the ``quality`` output when the backbone has a CR-FIQA or ScaleFace branch.
    """
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs onnx: pip install onnx onnxruntime") from exc
    card, backbone = export_card(model, "onnx")
    branch = getattr(backbone, "quality_branch", None)
    aux_key = get_branch(branch).aux_key if with_quality and branch is not None else None
    if branch is not None and aux_key is None:  # the quality output is left out
        card = replace(card, quality=tuple(q for q in card.quality if q.source != "branch"))
    _, height, width = card.preprocessing.input_size
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    wrapper = _OnnxWrapper(backbone, aux_key).eval()
    dummy = torch.zeros(2 if dynamic_batch else 1, 3, height, width, device=device)
    outputs = ["embedding", "quality"] if aux_key else ["embedding"]
    dynamic_axes = {name: {0: "batch"} for name in ["input", *outputs]} if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, fsync=False) as tmp:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
                _torch_onnx_export(wrapper, dummy, tmp, opset, outputs, dynamic_axes)
            proto = onnx.load(str(tmp))
            _set_metadata(proto, card)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    finally:
        backbone.train(was_training)
    return path


def _torch_onnx_export(
    module: nn.Module, dummy: Tensor, path: Path, opset: int, outputs: list[str], dynamic_axes: dict | None
) -> None:
    """The TorchScript exporter (``dynamo=False``, available in torch 2.13); the torch.export-based one
    (needs onnxscript) when the former is gone."""
    try:
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
        return
    except TypeError:  # pragma: no cover - a torch without the legacy exporter
        pass
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_axes else None  # pragma: no cover
    program = torch.onnx.export(  # pragma: no cover
        module,
        (dummy,),
        dynamo=True,
        opset_version=opset,
        input_names=["input"],
        output_names=outputs,
        dynamic_shapes=dynamic_shapes,
    )
    assert program is not None  # pragma: no cover - export(dynamo=True) always returns the program
    program.save(str(path))  # pragma: no cover


def _set_metadata(proto: Any, card: ModelCard) -> None:
    """The card (``qualiface.card``) and a few human-readable keys in the model's ``metadata_props``."""
    entries = {
        "qualiface.card": card.to_json(),
        "qualiface.name": card.name,
        "qualiface.preprocessing": card.preprocessing.describe(),
        "qualiface.pixel_scaling": "input = (pixel / 255 - mean) / std, pixel in 0..255",
    }
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in entries.items():
        prop = existing.get(key) or proto.metadata_props.add()
        prop.key = key
        prop.value = value


def export_safetensors(model: FaceModel | Backbone, path: str | os.PathLike[str]) -> Path:
    """Write the backbone weights and a JSON metadata header (see the module docstring); returns the path."""
    try:
        from safetensors.torch import save_file
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("safetensors export needs safetensors: pip install safetensors") from exc
    card, backbone = export_card(model, "safetensors")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    metadata = safetensors_metadata(card)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, fsync=False) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path
