"""ONNX recognizers, run by onnxruntime. The preprocessing is never guessed from a file name; it comes from, in
order:

1. qualiface's model card in the metadata (``qualiface.card``; files written by ``qualiface export``);
2. the table of known public models, by the SHA-256 of the file (:mod:`qualiface.models.known_models`);
3. what the graph proves: the input feeds a subtraction and a multiplication (or division) by constants, i.e. the
   graph normalises 0..255 pixels itself (insightface's rule for mxnet-converted models, OpenCV's SFace); the
   channel order is then RGB, the convention of both;
4. the caller's ``preprocessing=`` (``--preprocessing`` on the command line), which also overrides 1-3.

Otherwise loading fails with a message that says how to state it.

``device="cuda"`` asks onnxruntime for its CUDAExecutionProvider (then the CPU one); the provider that runs the
model is logged and kept in ``FaceModel.info["providers"]``, and a CUDA request that onnxruntime cannot serve (a
CPU-only onnxruntime, CUDA libraries it cannot load) is a warning, never a silent CPU run.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qualiface.backbones.base import Preprocessing
from qualiface.models.card import (
    PREPROCESSING_HELP,
    UNKNOWN_PREPROCESSING,
    CardError,
    ModelCard,
    QualityInfo,
    parse_json,
    preprocessing_from_dict,
)
from qualiface.models.face_model import FaceModel
from qualiface.models.formats.base import ModelFormat
from qualiface.models.formats.common import LoadRequest, ModelLoadError
from qualiface.models.known_models import KNOWN_MODELS
from qualiface.registry import MODEL_FORMATS

logger = logging.getLogger(__name__)

ONNX_FORMAT = "qualiface.onnx/1"
_NORMALISING_OPS = {"Sub", "Add", "Mul", "Div"}


@MODEL_FORMATS.register("onnx")
class Onnx(ModelFormat):
    name = "onnx"
    container = "onnx"
    description = "ONNX recognizer (qualiface export, a known public model, or preprocessing stated by the user)"

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        import onnxruntime as ort

        path = request.path
        providers = ["CPUExecutionProvider"]
        if torch.device(request.device).type == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{path}: onnxruntime cannot load the model ({exc})") from None
        running = report_providers(session, providers, path, ort.get_available_providers())
        meta = dict(session.get_modelmeta().custom_metadata_map or {})
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{path}: expected one N x 3 x H x W input, got {[(i.name, i.shape) for i in inputs]}")
        shape = inputs[0].shape
        height = shape[2] if isinstance(shape[2], int) else 112
        width = shape[3] if isinstance(shape[3], int) else 112
        dim = _output_dim(session, shape, height, width)
        outputs = [o.name for o in session.get_outputs()]
        card = _recorded_card(meta, path)
        if card is None:
            card = _foreign_card(request, meta, (height, width), dim, outputs)
        card = replace(card, weights_sha256=request.sha256, provenance={**card.provenance, "file": path.name})
        return FaceModel(
            card,
            session=session,
            device=request.device,
            path=str(path),
            info={"metadata": meta, "providers": running},
        )


def report_providers(session: Any, asked: list[str], path: Path, available: list[str]) -> list[str]:
    """The execution providers ``session`` runs on, first the one that runs the model: logged (info), and a
    warning when ``asked`` put the CUDA provider first and onnxruntime did not take it.

    Args:
        session: the onnxruntime ``InferenceSession``.
        asked: the providers asked for, in order of preference.
        path: the model file (named in the messages).
        available: ``onnxruntime.get_available_providers()`` (named in the warning).
    """
    running = list(session.get_providers())
    first = running[0] if running else "no provider"
    logger.info("%s: onnxruntime runs it on %s", path.name, first)
    if asked and asked[0] == "CUDAExecutionProvider" and first != "CUDAExecutionProvider":
        logger.warning(
            "%s: device cuda asked for onnxruntime's CUDAExecutionProvider but the model runs on %s (this "
            "onnxruntime offers %s); install the onnxruntime-gpu build for this machine's CUDA to run it on the GPU",
            path.name,
            first,
            ", ".join(available) or "none",
        )
    return running


def _output_dim(session: Any, shape: list[Any], height: int, width: int) -> int:
    out_shape = session.get_outputs()[0].shape
    dim = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    if dim is None:
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
        probe = np.zeros((batch, 3, height, width), dtype=np.float32)
        dim = int(
            np.asarray(session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: probe})[0]).shape[-1]
        )
    return int(dim)


def _recorded_card(meta: dict[str, str], path: Any) -> ModelCard | None:
    """The card qualiface's exporter wrote (``qualiface.card``; older exports: ``qualiface.preprocessing``)."""
    try:
        if "qualiface.card" in meta:
            return ModelCard.from_json(meta["qualiface.card"], where=f"{path}: model card")
        if meta.get("qualiface.format") == ONNX_FORMAT:  # an export from before the card
            prep = preprocessing_from_dict(parse_json(meta["qualiface.preprocessing"], "qualiface.preprocessing"))
            method = meta.get("qualiface.quality_method") or None
            quality = (QualityInfo(method=method, source="branch"),) if method else ()
            return ModelCard(
                name=meta.get("qualiface.name", path.stem),
                source_format="onnx",
                embedding_dim=int(meta.get("qualiface.embedding_dim", 0)) or 1,
                preprocessing=prep,
                architecture=meta.get("qualiface.backbone"),
                quality=quality,
            )
    except (CardError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path}: unreadable qualiface metadata ({exc})") from None
    return None


def _foreign_card(
    request: LoadRequest, meta: dict[str, str], size: tuple[int, int], dim: int, outputs: list[str]
) -> ModelCard:
    path = request.path
    base = Preprocessing(input_size=(3, *size), flip_fusion="none", source="onnx")
    known = KNOWN_MODELS.get(request.sha256 or "")
    provenance: dict[str, Any] = {"file": path.name}
    licence = None
    name = path.name
    if request.preprocessing is not None:
        prep = request.preprocessing(base)
        provenance["preprocessing_from"] = "stated by the user"
    elif known is not None:
        prep = preprocessing_from_dict({**known.preprocessing, "source": "known model (SHA-256)"}, base)
        provenance.update(known_model=known.name, origin=known.origin, preprocessing_from="known model table")
        licence, name = known.licence, known.name
    else:
        proof = graph_normalisation(path)
        if proof is None:
            message = (
                f"{path}: an ONNX recognizer that qualiface does not know (SHA-256 {request.sha256}) and whose graph "
                f"does not normalise its input: its preprocessing cannot be known. State it with "
                f"--preprocessing (Python: load_model(..., preprocessing=...)): {PREPROCESSING_HELP}"
            )
            if not request.describe_only:
                raise ModelLoadError(message)
            prep = replace(base, source=UNKNOWN_PREPROCESSING)  # described, never run (embed_images refuses it)
            provenance["preprocessing_from"] = "unknown: state it with --preprocessing"
        else:
            prep = preprocessing_from_dict(
                {"channel_order": "RGB", "mean": (0.0,) * 3, "std": (1 / 255,) * 3, "source": "onnx graph"}, base
            )
            provenance["preprocessing_from"] = f"the graph normalises its input ({proof}); RGB 0..255 fed as is"
    quality: tuple[QualityInfo, ...] = ()
    if "quality" in outputs:
        quality = (QualityInfo(method="cr_fiqa", source="branch", description="the graph's 'quality' output"),)
    return ModelCard(
        name=name,
        source_format="onnx",
        embedding_dim=dim,
        preprocessing=prep,
        quality=quality,
        provenance=provenance,
        licence=licence,
    )


def graph_normalisation(path: Any) -> str | None:
    """``"Sub 127.5 -> Mul 0.0078125"`` when the graph's input goes straight into a subtraction and a
    multiplication / division by constants (normalisation inside the graph), else ``None``."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = node.attribute[0].t
    current = graph.input[0].name
    steps: list[str] = []
    for _ in range(2):
        consumers = [n for n in graph.node if current in n.input]
        if len(consumers) != 1 or consumers[0].op_type not in _NORMALISING_OPS:
            return None
        node = consumers[0]
        other = [name for name in node.input if name != current]
        if len(other) != 1 or other[0] not in constants:
            return None
        values = numpy_helper.to_array(constants[other[0]]).reshape(-1)
        steps.append(f"{node.op_type} {', '.join(f'{v:.6g}' for v in values[:3])}")
        current = node.output[0]
    kinds = {s.split()[0] for s in steps}
    if not (kinds & {"Sub", "Add"} and kinds & {"Mul", "Div"}):
        return None
    return " -> ".join(steps)
