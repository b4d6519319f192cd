"""The format contract: one registered :class:`ModelFormat` per source of models (qualiface, insightface, MagFace,
AdaFace, CR-FIQA, ScaleFace, UniTSFace, safetensors, ONNX).

A format says how to recognise its files (a key layout for PyTorch state dicts, a container for safetensors and
ONNX), how to unwrap them and map their keys, which preprocessing and quality its models have, and how to finish
the :class:`~qualiface.models.face_model.FaceModel`. Adding a format is one module in this package with one
``@MODEL_FORMATS.register`` class: the package imports every module it holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, cast

from qualiface.models.face_model import FaceModel
from qualiface.models.formats.common import LoadRequest, ModelLoadError, flat_keys, mismatch
from qualiface.registry import MODEL_FORMATS

Container = Literal["torch", "safetensors", "onnx"]


class ModelFormat:
    """One source format (used as a class; never instantiated).

    Attributes:
        name: The registered name (``format=`` of :func:`~qualiface.models.load_model`).
        aliases: Other accepted spellings.
        container: ``"torch"`` (a ``torch.load``-able file), ``"safetensors"`` or ``"onnx"``.
        layout: For torch formats, a pattern every key of such a file matches.
        signature: A pattern at least one key matches (a file without it scores half).
        description: One line for ``qualiface info`` and the docs.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    container: ClassVar[Container] = "torch"
    layout: ClassVar[re.Pattern[str] | None] = None
    signature: ClassVar[re.Pattern[str] | None] = None
    description: ClassVar[str] = ""

    @classmethod
    def recognise(cls, obj: Any, keys: list[str]) -> float:
        """How well a torch-loaded object fits this format, 0..1 (the fraction of keys the layout explains,
        halved without the signature key)."""
        if cls.layout is None or not keys:
            return 0.0
        score = sum(1 for k in keys if cls.layout.match(k)) / len(keys)
        if cls.signature is not None and not any(cls.signature.match(k) for k in keys):
            score *= 0.5
        return score

    @classmethod
    def load(cls, obj: Any, request: LoadRequest) -> FaceModel:
        """The model of ``obj`` (the torch-loaded object; ``None`` for safetensors and ONNX, read from
        ``request.path``)."""
        raise NotImplementedError


def get_format(name: str) -> type[ModelFormat]:
    """The registered format ``name`` or one of its aliases (:class:`ModelLoadError` otherwise)."""
    key = name.lower()
    for fmt_name in MODEL_FORMATS.names():
        fmt = cast(type[ModelFormat], MODEL_FORMATS.get(fmt_name))
        if key == fmt_name or key in fmt.aliases:
            return fmt
    raise ModelLoadError(f"unknown format {name!r}; expected one of {', '.join(format_names())}")


def format_names() -> list[str]:
    """The registered format names."""
    return MODEL_FORMATS.names()


def torch_formats() -> list[type[ModelFormat]]:
    found = [cast(type[ModelFormat], MODEL_FORMATS.get(n)) for n in format_names()]
    return [f for f in found if f.container == "torch"]


def guess_format(keys: Iterable[str], obj: Any = None) -> list[tuple[str, float]]:
    """Score the torch formats by how well ``keys`` (a flattened key list) fit each layout, best first."""
    keys = list(keys)
    if not keys:
        return []
    scores = [(fmt.name, fmt.recognise(obj, keys)) for fmt in torch_formats()]
    return sorted(scores, key=lambda item: -item[1])


def detect_torch_format(obj: Any, path: Any) -> type[ModelFormat]:
    """The format of a torch-loaded object (best layout score, at least one half)."""
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: expected a dict of weights, got a {type(obj).__name__}")
    keys = flat_keys(obj)
    ranked = guess_format(keys, obj)
    if not ranked or ranked[0][1] < 0.5:
        shown = ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        raise mismatch(
            path, "any known format", [], [], keys, what=f"the keys fit no known checkpoint layout (keys: {shown})"
        )
    return get_format(ranked[0][0])
