"""The qualiface model file (``model.pt``): the one module that writes and reads it.

A ``torch.save`` dict, readable with ``torch.load(weights_only=True)``::

    format        "qualiface.model/1"
    card          the ModelCard as plain data (see qualiface.models.card)
    backbone, backbone_kwargs, embedding_dim, preprocessing    what builds the backbone
    state_dict    the backbone's weights (quality branch included)
    head          {"name", "num_classes", "threshold" (a learned one, if any)}
    head_state    {"weight": (C, D)}: every class centre, gathered over the ranks of a multi-process run
    step, config, qualiface_version

Files written before the card existed (no ``card`` key) are read too; their card is rebuilt from the other fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from qualiface.atomic import atomic_torch_save
from qualiface.errors import InputError

MODEL_FORMAT = "qualiface.model/1"


class ModelFileError(InputError):
    """A file that is not a readable qualiface model file; names the file and what is wrong."""


@dataclass
class ModelFile:
    """The content of a ``model.pt``."""

    backbone: str
    backbone_kwargs: dict[str, Any]
    state_dict: dict[str, Tensor]
    preprocessing: dict[str, Any] | None
    head: dict[str, Any]
    head_state: dict[str, Tensor] | None
    card: dict[str, Any] | None
    step: int | None
    config: dict[str, Any] | None
    raw: Mapping[str, Any]


def write_model_file(
    path: Path,
    *,
    backbone: str,
    backbone_kwargs: Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
    preprocessing: Mapping[str, Any],
    embedding_dim: int,
    card: Mapping[str, Any],
    head: Mapping[str, Any],
    head_state: Mapping[str, Tensor] | None,
    step: int | None = None,
    config: Mapping[str, Any] | None = None,
    version: str = "",
) -> Path:
    """Write a model file atomically (temporary file + rename); returns ``path``."""
    obj = {
        "format": MODEL_FORMAT,
        "card": dict(card),
        "backbone": backbone,
        "backbone_kwargs": dict(backbone_kwargs),
        "embedding_dim": int(embedding_dim),
        "preprocessing": dict(preprocessing),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "head": dict(head),
        "head_state": None if head_state is None else {k: v.detach().cpu() for k, v in head_state.items()},
        "step": step,
        "config": None if config is None else dict(config),
        "qualiface_version": version,
    }
    atomic_torch_save(obj, path)
    return path


def is_model_file(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == MODEL_FORMAT


def parse_model_file(obj: Any, path: Path) -> ModelFile:
    """The fields of a loaded model file; :class:`ModelFileError` for anything else."""
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path}: expected a qualiface model file, got a {type(obj).__name__}")
    if obj.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"{path}: not a qualiface model file (format {obj.get('format')!r}, expected {MODEL_FORMAT})"
        )
    missing = [k for k in ("backbone", "state_dict") if k not in obj]
    if missing:
        raise ModelFileError(f"{path}: qualiface model file without {', '.join(missing)}")
    state = obj["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelFileError(f"{path}: state_dict is a {type(state).__name__}, not a dict of tensors")
    kwargs = obj.get("backbone_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ModelFileError(f"{path}: backbone_kwargs is a {type(kwargs).__name__}, not a dict")
    head: Mapping[str, Any] = obj["head"] if isinstance(obj.get("head"), Mapping) else {}
    head_state: Mapping[str, Any] | None = obj["head_state"] if isinstance(obj.get("head_state"), Mapping) else None
    return ModelFile(
        backbone=str(obj["backbone"]),
        backbone_kwargs={str(k): v for k, v in kwargs.items()},
        state_dict={str(k): v for k, v in state.items() if isinstance(v, Tensor)},
        preprocessing=dict(obj["preprocessing"]) if isinstance(obj.get("preprocessing"), Mapping) else None,
        head=dict(head),
        head_state=dict(head_state) if head_state is not None else None,
        card=dict(obj["card"]) if isinstance(obj.get("card"), Mapping) else None,
        step=obj.get("step"),
        config=dict(obj["config"]) if isinstance(obj.get("config"), Mapping) else None,
        raw=obj,
    )


def read_model_file(path: Path) -> ModelFile:
    """Read ``path`` with ``torch.load(weights_only=True)`` and parse it."""
    from qualiface.models.formats.common import torch_load

    return parse_model_file(torch_load(Path(path)), Path(path))
