"""Export a backbone (or a loaded :class:`FaceModel`) to ONNX and to safetensors, both loadable by ``load_model``.

ONNX graph: input ``input`` ``(N, 3, H, W)`` float32, already normalised as the model's preprocessing says (no
normalisation inside the graph, as arcface_torch's ``torch2onnx.py``); outputs ``embedding`` ``(N, D)`` (raw, not
normalised) and, for a CR-FIQA or ScaleFace branch, ``quality`` ``(N,)``. The preprocessing, the embedding width
and the quality method are written to the model's ``metadata_props`` (keys ``qualiface.*``).

safetensors: the backbone weights plus a JSON metadata header (``format`` = ``qualiface.safetensors/1``,
``qualiface`` = backbone name / kwargs / preprocessing / quality method / threshold).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qualiface.atomic import atomic_path
from qualiface.backbones.base import Backbone
from qualiface.models.face_model import FaceModel
from qualiface.models.loading import ONNX_FORMAT, SAFETENSORS_FORMAT

_AUX_KEYS = {"cr_fiqa": "quality", "scaleface": "scale"}


class _OnnxWrapper(nn.Module):
    """``input -> (embedding, quality)`` or ``input -> embedding``."""

    def __init__(self, backbone: nn.Module, aux_key: str | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.aux_key = aux_key

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.aux_key is None:
            return self.backbone(images)
        embeddings, aux = self.backbone.forward_aux(images)
        return embeddings, aux[self.aux_key].float()


def describe(model: FaceModel | Backbone) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: backbone name and kwargs, preprocessing, quality method, threshold."""
    if isinstance(model, FaceModel):
        if model.module is None:
            raise ValueError(f"{model.name} is an ONNX model; only PyTorch models can be exported")
        backbone = model.module
        name = model.info.get("backbone") or getattr(backbone, "arch", "")
        kwargs = dict(model.info.get("backbone_kwargs") or _backbone_kwargs(backbone))
        return {
            "backbone": name,
            "backbone_kwargs": kwargs,
            "embedding_dim": model.embedding_dim,
            "preprocessing": model.preprocessing.to_dict(),
            "quality_method": model.quality_method,
            "threshold": model.threshold,
            "source_format": model.source_format,
            "name": name,
        }
    if not isinstance(model, Backbone):
        raise TypeError(f"expected a FaceModel or a Backbone, got {type(model).__name__}")
    kwargs = dict(getattr(model, "_qualiface_kwargs", None) or _backbone_kwargs(model))
    branch = getattr(model, "quality_branch", None)
    return {
        "backbone": model.arch,
        "backbone_kwargs": kwargs,
        "embedding_dim": model.embedding_dim,
        "preprocessing": model.preprocessing.to_dict(),
        "quality_method": branch if branch in _AUX_KEYS else None,
        "threshold": None,
        "source_format": "qualiface",
        "name": model.arch,
    }


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
    info = describe(model)
    backbone = model.module if isinstance(model, FaceModel) else model
    assert backbone is not None
    branch = getattr(backbone, "quality_branch", None)
    aux_key = _AUX_KEYS.get(branch) if with_quality and branch in _AUX_KEYS else None
    if aux_key is None and info["quality_method"] in _AUX_KEYS:
        info["quality_method"] = None  # the quality output is left out
    _, height, width = info["preprocessing"]["input_size"]
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
            _set_metadata(proto, info)
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
    program.save(str(path))  # pragma: no cover


def _set_metadata(proto: Any, info: dict[str, Any]) -> None:
    prep = info["preprocessing"]
    entries = {
        "qualiface.format": ONNX_FORMAT,
        "qualiface.name": str(info["name"]),
        "qualiface.backbone": str(info["backbone"]),
        "qualiface.source_format": str(info["source_format"]),
        "qualiface.preprocessing": json.dumps(prep),
        "qualiface.channel_order": prep["channel_order"],
        "qualiface.mean": json.dumps(list(prep["mean"])),
        "qualiface.std": json.dumps(list(prep["std"])),
        "qualiface.pixel_scaling": "input = (pixel / 255 - mean) / std, pixel in 0..255",
        "qualiface.input_size": json.dumps(list(prep["input_size"])),
        "qualiface.flip_fusion": prep["flip_fusion"],
        "qualiface.embedding_dim": str(info["embedding_dim"]),
        "qualiface.quality_method": info["quality_method"] or "",
        "qualiface.threshold": "" if info["threshold"] is None else repr(float(info["threshold"])),
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
    info = describe(model)
    backbone = model.module if isinstance(model, FaceModel) else model
    assert backbone is not None
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    metadata = {"format": SAFETENSORS_FORMAT, "qualiface": json.dumps(info)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, fsync=False) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _backbone_kwargs(backbone: nn.Module) -> dict[str, Any]:
    """Constructor kwargs recovered from a built backbone (for one not made by ``load_model``)."""
    kwargs: dict[str, Any] = {"embedding_dim": int(getattr(backbone, "embedding_dim", 512))}
    if hasattr(backbone, "bottleneck_dim"):
        kwargs["input_size"] = int(backbone.preprocessing.input_size[1])
    branch = getattr(backbone, "quality_branch", None)
    if branch is not None:
        kwargs["quality_branch"] = branch
    head = getattr(backbone, "scale_predictor", None)
    if head is not None:
        kwargs["scale_activation"] = head.activation
        kwargs["scale_coefficient"] = head.coefficient
    bn1 = getattr(backbone, "bn1", None)
    if isinstance(bn1, nn.BatchNorm2d) and bn1.eps != 1e-5:
        kwargs["bn_eps"] = bn1.eps
    return kwargs
