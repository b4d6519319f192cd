"""``load_model``: one entry point for qualiface models, the released checkpoints of other projects, and ONNX.

The formats are registered classes, one module each in :mod:`qualiface.models.formats` (qualiface, insightface,
magface, adaface, crfiqa, scaleface, unitsface, safetensors, onnx): each says how to recognise its files, unwrap
them, map their keys, which preprocessing and quality its models have. This module resolves the path, picks the
format (forced, or detected from the container and the keys), applies the caller's preprocessing override and
the calibration file, and returns a :class:`FaceModel` whose :class:`~qualiface.models.card.ModelCard` says what
the model is.

Every torch file is read with ``torch.load(..., weights_only=True)``: a pickled whole module (UniTSFace's
``*_th_epoch.pth``) is refused, never unpickled. Weights are loaded strictly: a mismatch raises
:class:`ModelLoadError` naming the missing and unexpected keys and the format the keys fit best.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from qualiface.backbones.base import Preprocessing
from qualiface.models.calibration import apply_calibration, load_calibration, weights_file
from qualiface.models.card import CardError, preprocessing_from_dict, preprocessing_items
from qualiface.models.face_model import FaceModel
from qualiface.models.formats import LoadRequest, ModelLoadError, detect_torch_format, get_format
from qualiface.models.formats.common import torch_load
from qualiface.models.formats.qualiface import Qualiface
from qualiface.run_layout import RunLayout, is_checkpoint_dir

_SUFFIXES = ("", ".onnx", ".safetensors", ".pt", ".pth", ".ckpt", ".tar")


def load_model(
    path_or_name: str | os.PathLike[str],
    *,
    format: str | None = None,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    preprocessing: Preprocessing | Mapping[str, Any] | str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    describe_only: bool = False,
) -> FaceModel:
    """Load a face model from a file, a qualiface run directory or a checkpoint folder.

    Args:
        path_or_name: A file (``.pt``, ``.pth``, ``.ckpt``, ``.tar``, ``.safetensors``, ``.onnx``), a run
            directory (its ``model.pt`` or newest complete checkpoint) or a file name found in one of the
            folders of the ``QUALIFACE_MODEL_PATH`` environment variable (``os.pathsep``-separated).
        format: Force a format (a registered name or alias, see ``qualiface info --formats``); default: detected.
        arch: Force the backbone (a registered name such as ``"iresnet50"``); default: inferred from the keys.
        device: Torch device (``"cpu"``, ``"cuda"``); for ONNX, ``"cuda"`` asks for the CUDA provider.
        preprocessing: State the preprocessing (a :class:`Preprocessing`, a dict of its fields, or the text of
            ``--preprocessing``); it replaces what the file says. Needed for an ONNX file that is neither a
            qualiface export, nor a known public model, nor normalises its input in the graph.
        backbone_kwargs: Extra backbone constructor arguments, e.g. ``{"scale_activation": "exp",
            "scale_coefficient": 64}`` for a ScaleFace head (the activation is not stored in its checkpoint).
        describe_only: Load to describe the model (``qualiface info``): an ONNX file whose preprocessing cannot be
            known loads with it marked ``unknown`` instead of being refused; such a model refuses to embed.

    Raises:
        ModelLoadError: Unknown format, keys or shapes that do not fit, a pickled module, an unreadable file, a
            calibration file made for other weights or holding an invalid threshold.
        FileNotFoundError: Nothing at ``path_or_name``.
    """
    path = _resolve(path_or_name)
    fmt = get_format(format) if format is not None else None
    stated = _stated_preprocessing(preprocessing)
    request = LoadRequest(
        path=path,
        arch=arch,
        overrides=dict(backbone_kwargs or {}),
        device=device,
        preprocessing=stated,
        describe_only=describe_only,
    )
    if path.is_dir():
        model = _load_directory(path, request)
    elif (fmt is None and path.suffix.lower() == ".onnx") or (fmt is not None and fmt.container == "onnx"):
        model = get_format("onnx").load(None, request)
    elif (fmt is None and path.suffix.lower() == ".safetensors") or (
        fmt is not None and fmt.container == "safetensors"
    ):
        model = get_format("safetensors").load(None, request)
    else:
        obj = torch_load(path)
        chosen = fmt or detect_torch_format(obj, path)
        if not isinstance(obj, Mapping):
            raise ModelLoadError(
                f"{path}: expected a dict of weights for format {chosen.name!r}, got {type(obj).__name__}"
            )
        model = chosen.load(obj, request)
    if stated is not None:
        model.preprocessing = stated(model.preprocessing)
    calibration = load_calibration(path, model.card.weights_sha256)
    if calibration is not None:
        model.calibration = calibration
        model.card = apply_calibration(model.card, calibration)
    return model


def _stated_preprocessing(
    value: Preprocessing | Mapping[str, Any] | str | None,
) -> Callable[[Preprocessing], Preprocessing] | None:
    """What the caller states, as a function of the model's own preprocessing: a whole :class:`Preprocessing`
    replaces it; a dict of fields or the ``--preprocessing`` text changes those fields only. Checked now, so a
    bad statement fails before the model is read."""
    if value is None:
        return None
    if isinstance(value, Preprocessing):
        whole = replace(value, source="stated by the user")
        return lambda base: whole
    try:
        items = preprocessing_items(value) if isinstance(value, str) else dict(value)
        preprocessing_from_dict(items)
    except CardError as exc:
        raise ModelLoadError(str(exc)) from None
    return lambda base: preprocessing_from_dict({**items, "source": "stated by the user"}, base)


def _resolve(path_or_name: str | os.PathLike[str]) -> Path:
    path = Path(path_or_name).expanduser()
    if path.exists():
        return path
    searched = [Path(p) for p in os.environ.get("QUALIFACE_MODEL_PATH", "").split(os.pathsep) if p]
    if path.parent == Path("."):
        for folder in searched:
            for suffix in _SUFFIXES:
                candidate = folder / f"{path.name}{suffix}"
                if candidate.exists():
                    return candidate
    where = f" (also searched QUALIFACE_MODEL_PATH: {', '.join(map(str, searched))})" if searched else ""
    raise FileNotFoundError(f"{path}: no such model file or directory{where}")


def _load_directory(path: Path, request: LoadRequest) -> FaceModel:
    """A run directory (``model.pt`` or ``checkpoints/``) or one checkpoint folder (``rank0.pt`` + ``COMPLETE``)."""
    layout = RunLayout(path)
    request.hash_path = weights_file(path)
    if layout.model_file.is_file():
        file_request = replace(request, path=layout.model_file)
        return Qualiface.load(torch_load(layout.model_file), file_request)
    folder = path
    if layout.checkpoints.is_dir():
        latest = layout.latest_checkpoint()
        if latest is None:
            raise ModelLoadError(f"{path}: a run directory without model.pt and without a complete checkpoint")
        folder = latest
    if not is_checkpoint_dir(folder) or not (folder / "rank0.pt").is_file():
        raise ModelLoadError(
            f"{path}: not a qualiface run directory or complete checkpoint folder (no model.pt, rank0.pt)"
        )
    return Qualiface.load_checkpoint(folder / "rank0.pt", replace(request, path=folder / "rank0.pt"))
