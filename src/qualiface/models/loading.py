"""``load_model``: one entry point for qualiface models, the released checkpoints of other projects, and ONNX.

Supported sources (methods.md §9, the checkpoint-loading matrix; preprocessing per §1.2):

- ``qualiface``: ``model.pt`` (``{"format": "qualiface.model/1", ...}``), a run directory or a checkpoint
  folder; backbone, kwargs and preprocessing as recorded; quality from the branch or (MagFace/AdaFace heads) the norm.
- ``insightface``: arcface_torch ``model.pt`` / ``backbone.pth``, plain state dict, iresnet18..200 or
  mobilefacenet(_large); RGB ±1, flip fusion ``sum``; no quality.
- ``magface``: ``{state_dict}`` with ``^(module.)?features.(module.)?`` prefixes (classifier dropped); iResNet
  with BN eps 2e-5; BGR x/255; quality ‖f‖.
- ``adaface``: Lightning ``.ckpt``, ``model.`` prefix stripped (``head.*`` dropped); IR / IR-SE; BGR ±1, flip
  fusion ``sum``; quality ‖f‖.
- ``crfiqa``: ``{step}backbone.pth``, plain state dict with ``qs.*``; iResNet + ``qs``; RGB ±1; quality ``qs``.
- ``scaleface``: ``checkpoint.pth`` = ``{backbone, scale_predictor}``; iResNet + MLP scale head; RGB
  (x − 127.5)/128; quality = predicted scale.
- ``unitsface``: ``*_checkpoint.tar`` of LResNetXEIR (§2.7, §8.6); the learned threshold ``b / γ`` is kept.
- ``safetensors``: weights + qualiface JSON metadata (or a foreign state dict, detected by its keys).
- ``onnx``: onnxruntime; preprocessing from qualiface metadata or guessed (protocols.md §6.3).

Every torch file is read with ``torch.load(..., weights_only=True)``: a pickled whole module (UniTSFace's
``*_th_epoch.pth``) is refused, never unpickled. Weights are loaded strictly: a mismatch raises
:class:`ModelLoadError` naming the missing and unexpected keys and the format the keys fit best.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qualiface.atomic import atomic_path
from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.models.face_model import FaceModel
from qualiface.registry import BACKBONES

MODEL_FORMAT = "qualiface.model/1"
SAFETENSORS_FORMAT = "qualiface.safetensors/1"
ONNX_FORMAT = "qualiface.onnx/1"
CALIBRATION_FORMAT = "qualiface.calibration/1"
CALIBRATION_SUFFIX = ".qualiface.json"

FORMATS: tuple[str, ...] = (
    "qualiface",
    "insightface",
    "magface",
    "adaface",
    "crfiqa",
    "scaleface",
    "unitsface",
    "safetensors",
    "onnx",
)
_ALIASES = {
    "arcface_torch": "insightface",
    "arcface": "insightface",
    "insightface_iresnet": "insightface",
    "insightface_mbf": "insightface",
    "mbf": "insightface",
    "magface_iresnet": "magface",
    "adaface_ir": "adaface",
    "lightning": "adaface",
    "cr_fiqa": "crfiqa",
    "cr-fiqa": "crfiqa",
    "scale_face": "scaleface",
    "unitsface_r50": "unitsface",
    "scaleface_r50": "scaleface",
}

# methods.md §1.2, per checkpoint family: channel order, mean, std (on x/255), flip fusion.
_FAMILY_PREPROCESSING: dict[str, dict[str, Any]] = {
    "insightface": {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"},
    "magface": {"channel_order": "BGR", "mean": (0.0,) * 3, "std": (1.0,) * 3, "flip_fusion": "none"},
    "adaface": {"channel_order": "BGR", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"},
    "crfiqa": {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "none"},
    "scaleface": {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (128 / 255,) * 3, "flip_fusion": "none"},
    "unitsface": {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3, "flip_fusion": "sum"},
}

_IRESNET_ARCHS = {
    (2, 2, 2, 2): "iresnet18",
    (3, 4, 6, 3): "iresnet34",
    (3, 4, 14, 3): "iresnet50",
    (3, 13, 30, 3): "iresnet100",
    (6, 26, 60, 6): "iresnet200",
}
_IR_ARCHS = {
    ((2, 2, 2, 2), False): "ir_18",
    ((3, 4, 6, 3), False): "ir_34",
    ((3, 4, 14, 3), False): "ir_50",
    ((3, 13, 30, 3), False): "ir_101",
    ((3, 4, 14, 3), True): "ir_se_50",
    ((3, 13, 30, 3), True): "ir_se_101",
}

# Key layouts (methods.md §2) used to guess the source format of a file whose keys do not fit.
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_IRESNET_KEYS = (
    rf"(conv1\.weight|bn1\.{_BN}|prelu\.weight"
    rf"|layer[1-4]\.\d+\.(bn[123]\.{_BN}|conv[12]\.weight|prelu\.weight|downsample\.0\.weight|downsample\.1\.{_BN})"
    rf"|bn2\.{_BN}|fc\.(weight|bias)|features\.{_BN})"
)
_IR_KEYS = (
    rf"(input_layer\.0\.weight|input_layer\.1\.{_BN}|input_layer\.2\.weight"
    rf"|body\.\d+\.(shortcut_layer\.0\.weight|shortcut_layer\.1\.{_BN}"
    rf"|res_layer\.[1-4]\.weight|res_layer\.[0-5]\.{_BN}|res_layer\.se_block\.fc[12]\.weight)"
    rf"|output_layer\.0\.{_BN}|output_layer\.3\.(weight|bias)|output_layer\.4\.{_BN})"
)
_MBF_KEYS = rf"((layers\.\d+|conv_sep|features)(\.layers\.\d+)+\.{_BN}|features\.layers\.2\.weight)"
_UNITS_KEYS = (
    rf"(conv1\.weight|bn1\.{_BN}|prelu\.weight"
    rf"|layer[1-4]\.\d+\.(bn[012]\.{_BN}|conv[12]\.weight|prelu\.weight|downsample\.0\.weight|downsample\.1\.{_BN})"
    rf"|bn4\.{_BN}|fc5\.weight|bn5\.{_BN}|sample_to_(class|sample)_loss\..+)"
)
_LRESNET_ARCHS = {(3, 4, 14, 3): "lresnet50eir", (3, 13, 30, 3): "lresnet100eir", (3, 33, 60, 3): "lresnet200eir"}
UNITSFACE_GAMMA = 64.0
_SCALE_HEAD_KEYS = r"mlp\.\d+\.(weight|bias|running_mean|running_var|num_batches_tracked)"
_SIGNATURES: dict[str, tuple[re.Pattern[str], re.Pattern[str] | None]] = {
    # format: (every key of a file of that format matches, at least one key matches)
    "insightface": (re.compile(rf"^({_IRESNET_KEYS}|{_MBF_KEYS})$"), None),
    "crfiqa": (re.compile(rf"^({_IRESNET_KEYS}|qs\.(weight|bias))$"), re.compile(r"^qs\.weight$")),
    "magface": (
        re.compile(rf"^((module\.)?features\.(module\.)?{_IRESNET_KEYS}|(module\.)?fc\..+|.*parallel.*)$"),
        re.compile(r"^(module\.)?features\.(module\.)?conv1\.weight$"),
    ),
    "adaface": (
        re.compile(rf"^((model\.)?{_IR_KEYS}|head\..+)$"),
        re.compile(r"^(model\.)?input_layer\.0\.weight$"),
    ),
    "scaleface": (
        re.compile(rf"^(backbone\.{_IRESNET_KEYS}|scale_predictor\.{_SCALE_HEAD_KEYS})$"),
        re.compile(r"^scale_predictor\."),
    ),
    "unitsface": (  # the official trainer wraps the model in nn.DataParallel: keys may start with "module."
        re.compile(rf"^(module\.)?{_UNITS_KEYS}$"),
        re.compile(r"^(module\.)?(fc5\.weight|layer1\.0\.bn0\..+)$"),
    ),
    "qualiface": (re.compile(r"^(format|state_dict\..+)$"), re.compile(r"^format$")),
}
_MAGFACE_PREFIX = re.compile(r"^(module\.)?features\.(module\.)?")


class ModelLoadError(ValueError):
    """A file that cannot be loaded as the requested (or detected) model: names the file, the missing and
    unexpected keys, and the source format the keys fit best."""


# ---------------------------------------------------------------------------------------------------- public API


def load_model(
    path_or_name: str | os.PathLike[str],
    *,
    format: str | None = None,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> FaceModel:
    """Load a face model from a file, a qualiface run directory or a checkpoint folder.

    Args:
        path_or_name: A file (``.pt``, ``.pth``, ``.ckpt``, ``.tar``, ``.safetensors``, ``.onnx``), a run
            directory (its ``model.pt`` or newest complete checkpoint) or a file name found in one of the
            folders of the ``QUALIFACE_MODEL_PATH`` environment variable (``os.pathsep``-separated).
        format: Force an adapter (one of :data:`FORMATS`); default: detected from the extension and contents.
        arch: Force the backbone (a registered name such as ``"iresnet50"``); default: inferred from the keys.
        device: Torch device (``"cpu"``, ``"cuda"``); for ONNX, ``"cuda"`` asks for the CUDA provider.
        preprocessing: Override the preprocessing (a :class:`Preprocessing` or a dict of its fields); needed
            only for a foreign ONNX file whose normalisation cannot be read from the graph.
        backbone_kwargs: Extra backbone constructor arguments, e.g. ``{"scale_activation": "exp",
            "scale_coefficient": 64}`` for a ScaleFace head (the activation is not stored in its checkpoint).

    Raises:
        ModelLoadError: Unknown format, keys or shapes that do not fit, a pickled module, an unreadable file.
        FileNotFoundError: Nothing at ``path_or_name``.
    """
    path = _resolve(path_or_name)
    fmt = _canonical_format(format) if format is not None else None
    overrides = dict(backbone_kwargs or {})
    if path.is_dir():
        model = _load_directory(path, arch=arch, overrides=overrides, device=device)
    elif fmt == "onnx" or (fmt is None and path.suffix.lower() == ".onnx"):
        model = _load_onnx(path, device=device, preprocessing=preprocessing)
    elif fmt == "safetensors" or (fmt is None and path.suffix.lower() == ".safetensors"):
        model = _load_safetensors(path, arch=arch, overrides=overrides, device=device)
    else:
        obj = _torch_load(path)
        model = _load_torch_object(obj, path, fmt=fmt, arch=arch, overrides=overrides, device=device)
    if preprocessing is not None and model.module is not None:
        model.preprocessing = _coerce_preprocessing(preprocessing, model.preprocessing)
        model.module.preprocessing = model.preprocessing
    calibration = load_calibration(path)
    if calibration is not None:
        model.calibration = calibration
        model.threshold = float(calibration["threshold"])
    return model


def calibration_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the calibration sidecar of ``model_path`` lives: ``<file>.qualiface.json`` next to a file; for a run
    directory the sidecar of its ``model.pt``, for another directory ``calibration.qualiface.json`` inside it."""
    path = Path(model_path)
    if path.is_dir():
        if (path / "model.pt").is_file():
            return path / f"model.pt{CALIBRATION_SUFFIX}"
        return path / f"calibration{CALIBRATION_SUFFIX}"
    return path.with_name(path.name + CALIBRATION_SUFFIX)


def save_calibration(
    model_path: str | os.PathLike[str],
    threshold: float,
    *,
    fmr: float,
    pairs: str,
    metric: str = "cosine",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the decision threshold calibrated on ``pairs`` at false-match rate ``fmr`` next to the model
    (atomically); :func:`load_model` reads it into ``threshold`` and ``calibration``. ``extra`` adds JSON fields
    (e.g. ``quality_floor``, the quality below which a face is outside the calibrated range). Returns the path."""
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not 0.0 < float(fmr) < 1.0:
        raise ValueError(f"fmr must be in (0, 1), got {fmr}")
    model = Path(model_path)
    if not model.exists():
        raise FileNotFoundError(f"{model}: no such model file or directory")
    record = {
        "format": CALIBRATION_FORMAT,
        "threshold": threshold,
        "fmr": float(fmr),
        "pairs": str(pairs),
        "metric": metric,
        "model": model.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **dict(extra or {}),
    }
    target = calibration_path(model)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return target


def load_calibration(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The calibration sidecar of ``model_path`` (see :func:`save_calibration`), or ``None``."""
    target = calibration_path(model_path)
    if not target.is_file():
        return None
    try:
        record = json.loads(target.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{target}: unreadable calibration file ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT or "threshold" not in record:
        raise ModelLoadError(f"{target}: not a qualiface calibration file (expected format {CALIBRATION_FORMAT!r})")
    return record


def guess_format(keys: Iterable[str]) -> list[tuple[str, float]]:
    """Score the known source formats by how well ``keys`` (a flattened key list) fit each layout, best first."""
    keys = list(keys)
    if not keys:
        return []
    scores: list[tuple[str, float]] = []
    for fmt, (layout, signature) in _SIGNATURES.items():
        if fmt == "qualiface":
            score = 1.0 if "format" in keys else 0.0
        else:
            score = sum(1 for k in keys if layout.match(k)) / len(keys)
            if signature is not None and not any(signature.match(k) for k in keys):
                score *= 0.5
        scores.append((fmt, score))
    return sorted(scores, key=lambda item: -item[1])


# ---------------------------------------------------------------------------------------------------- reading


def _resolve(path_or_name: str | os.PathLike[str]) -> Path:
    path = Path(path_or_name).expanduser()
    if path.exists():
        return path
    searched = [Path(p) for p in os.environ.get("QUALIFACE_MODEL_PATH", "").split(os.pathsep) if p]
    if path.parent == Path("."):
        for folder in searched:
            for suffix in ("", ".onnx", ".safetensors", ".pt", ".pth", ".ckpt", ".tar"):
                candidate = folder / f"{path.name}{suffix}"
                if candidate.exists():
                    return candidate
    where = f" (also searched QUALIFACE_MODEL_PATH: {', '.join(map(str, searched))})" if searched else ""
    raise FileNotFoundError(f"{path}: no such model file or directory{where}")


def _canonical_format(fmt: str) -> str:
    key = fmt.lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ModelLoadError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return key


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a pickled Python object is refused with an explanation."""
    import argparse
    import pathlib

    benign = [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath]  # Lightning hyper-parameters
    try:
        with torch.serialization.safe_globals(benign):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            needed = [str(g) for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)]
        except Exception:  # not a zip checkpoint
            needed = []
        if not needed and "unsupported global" not in str(exc).lower():
            reason = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise ModelLoadError(f"{path}: not a readable PyTorch file ({reason})") from None
        module_hint = ""
        if any("torch.nn.modules" in g or "LResNet" in g or "backbone" in g for g in needed):
            module_hint = (
                " It looks like a whole pickled nn.Module (e.g. UniTSFace's *_th_epoch.pth, saved with "
                "torch.save(net)); re-save its weights with torch.save(net.state_dict(), ...) in a trusted "
                "environment, or use the *_checkpoint.tar state dict."
            )
        objects = f" It references Python objects: {', '.join(needed[:8])}." if needed else ""
        raise ModelLoadError(
            f"{path}: refused to load: the file contains pickled Python objects, and unpickling them could run "
            f"arbitrary code (qualiface loads with torch.load(weights_only=True)).{objects}{module_hint}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None


def _flat_keys(obj: Any) -> list[str]:
    """The keys a container exposes, flattened one level for the known wrappers (for format guessing)."""
    if not isinstance(obj, Mapping):
        return []
    if "format" in obj:
        return ["format", *(f"state_dict.{k}" for k in obj.get("state_dict") or {})]
    if isinstance(obj.get("state_dict"), Mapping):
        return [str(k) for k in obj["state_dict"]]
    if isinstance(obj.get("backbone"), Mapping):
        out = [f"backbone.{k}" for k in obj["backbone"]]
        if isinstance(obj.get("scale_predictor"), Mapping):
            out += [f"scale_predictor.{k}" for k in obj["scale_predictor"]]
        return out
    return [str(k) for k in obj]


def _detect_format(obj: Any, path: Path) -> str:
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: expected a dict of weights, got a {type(obj).__name__}")
    if obj.get("format") == MODEL_FORMAT:
        return "qualiface"
    if "format" in obj and "state_dict" in obj:
        raise ModelLoadError(
            f"{path}: qualiface model file of unknown format {obj['format']!r} (expected {MODEL_FORMAT})"
        )
    if isinstance(obj.get("backbone"), Mapping) and isinstance(obj.get("scale_predictor"), Mapping):
        return "scaleface"
    keys = _flat_keys(obj)
    ranked = guess_format(keys)
    if not ranked or ranked[0][1] < 0.5:
        shown = ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        raise _mismatch(
            path, "any known format", [], [], keys, what=f"the keys fit no known checkpoint layout (keys: {shown})"
        )
    return ranked[0][0]


# ---------------------------------------------------------------------------------------------------- adapters


def _load_torch_object(
    obj: Any, path: Path, *, fmt: str | None, arch: str | None, overrides: dict[str, Any], device: Any
) -> FaceModel:
    fmt = fmt or _detect_format(obj, path)
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: expected a dict of weights for format {fmt!r}, got a {type(obj).__name__}")
    adapters: dict[str, Callable[..., FaceModel]] = {
        "qualiface": _from_qualiface,
        "insightface": _from_insightface,
        "magface": _from_magface,
        "adaface": _from_adaface,
        "crfiqa": _from_crfiqa,
        "scaleface": _from_scaleface,
        "unitsface": _from_unitsface,
    }
    if fmt not in adapters:
        raise ModelLoadError(f"{path}: format {fmt!r} is not a PyTorch checkpoint format")
    return adapters[fmt](obj, path, arch=arch, overrides=overrides, device=device)


def _state_dict_of(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}


def _from_insightface(
    obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any
) -> FaceModel:
    state = _state_dict_of(obj)
    if (arch or "").startswith("mobilefacenet") or (arch is None and any(k.startswith("conv_sep.") for k in state)):
        name, kwargs = _infer_mbf(state, path)
        name = arch or name
    else:
        name, kwargs = _infer_iresnet(state, path, arch, "insightface")
    backbone = _build_and_load(name, {**kwargs, **overrides}, state, path, "insightface")
    return _wrap(backbone, path, "insightface", name, {**kwargs, **overrides}, quality_method=None, device=device)


def _from_crfiqa(obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    state = _state_dict_of(obj)
    name, kwargs = _infer_iresnet(state, path, arch, "crfiqa")
    kwargs.update(quality_branch="cr_fiqa", features_weight_trainable=True)
    kwargs.update(overrides)
    backbone = _build_and_load(name, kwargs, state, path, "crfiqa")
    return _wrap(backbone, path, "crfiqa", name, kwargs, quality_method="cr_fiqa", device=device)


def _from_magface(obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    raw = _state_dict_of(obj)
    state: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in raw.items():
        stripped = _MAGFACE_PREFIX.sub("", key, count=1)
        if stripped != key:
            state[stripped] = value
        else:
            dropped.append(key)  # the classifier (module.fc.weight or the parallel FC)
    if not state:
        raise _mismatch(path, "magface", [], [], list(raw), what="no key starts with features. / module.features.")
    name, kwargs = _infer_iresnet(state, path, arch, "magface")
    kwargs.update(bn_eps=2e-5, bn_momentum=0.9, features_weight_trainable=True)
    kwargs.update(overrides)
    backbone = _build_and_load(name, kwargs, state, path, "magface", all_keys=list(raw))
    model = _wrap(backbone, path, "magface", name, kwargs, quality_method="feature_norm", device=device)
    model.info["dropped_keys"] = dropped
    return model


def _from_adaface(obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    raw = _state_dict_of(obj)
    state = {k[len("model.") :]: v for k, v in raw.items() if k.startswith("model.")}
    if not state and any(k.startswith("input_layer.") for k in raw):
        state = dict(raw)  # an already stripped AdaFace state dict
    if not state:
        raise _mismatch(path, "adaface", [], [], list(raw), what="no key starts with 'model.'")
    name, kwargs = _infer_ir(state, path, arch)
    kwargs.update(overrides)
    backbone = _build_and_load(name, kwargs, state, path, "adaface", all_keys=list(raw))
    model = _wrap(backbone, path, "adaface", name, kwargs, quality_method="feature_norm", device=device)
    model.info["dropped_keys"] = [k for k in raw if not k.startswith("model.")]
    return model


def _from_scaleface(obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    if not isinstance(obj.get("backbone"), Mapping) or not isinstance(obj.get("scale_predictor"), Mapping):
        keys = _flat_keys(obj)
        raise _mismatch(
            path, "scaleface", ["backbone", "scale_predictor"], keys, keys, what="expected {backbone, scale_predictor}"
        )
    state = {str(k): v for k, v in obj["backbone"].items()}
    state.update({f"scale_predictor.{k}": v for k, v in obj["scale_predictor"].items()})
    name, kwargs = _infer_iresnet(state, path, arch, "scaleface")
    kwargs.update(quality_branch="scaleface")
    kwargs.update(overrides)
    backbone = _build_and_load(name, kwargs, state, path, "scaleface", all_keys=_flat_keys(obj))
    return _wrap(backbone, path, "scaleface", name, kwargs, quality_method="scaleface", device=device)


def _from_unitsface(obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    """UniTSFace ``*_checkpoint.tar`` (``{epoch, state_dict, optimizer}``, §8.6): the LResNetXEIR keys (a
    ``module.`` prefix from ``nn.DataParallel`` is stripped), the loss tensors dropped; the USS bias gives the
    learned unified threshold ``t = b / γ`` (γ = 64, the official default)."""
    state = {re.sub(r"^module\.", "", k): v for k, v in _state_dict_of(obj).items()}
    losses = {k: v for k, v in state.items() if k.startswith(("sample_to_class_loss.", "sample_to_sample_loss."))}
    backbone_state = {k: v for k, v in state.items() if k not in losses}
    if arch is None:
        counts = [0, 0, 0, 0]
        for key in backbone_state:
            match = re.match(r"^layer([1-4])\.(\d+)\.", key)
            if match:
                counts[int(match.group(1)) - 1] = max(counts[int(match.group(1)) - 1], int(match.group(2)) + 1)
        arch = _LRESNET_ARCHS.get(tuple(counts))
        if arch is None:
            keys = list(state)
            raise _mismatch(
                path,
                "unitsface",
                [],
                [],
                keys,
                what=f"blocks per stage {tuple(counts)} match no LResNetXEIR "
                f"({', '.join(_LRESNET_ARCHS.values())}); pass arch= to force one",
            )
    kwargs: dict[str, Any] = {}
    fc5 = backbone_state.get("fc5.weight")
    if fc5 is not None and fc5.ndim == 4:
        kwargs = {"embedding_dim": int(fc5.shape[0]), "input_size": 16 * int(fc5.shape[-1])}
    kwargs.update(overrides)
    backbone = _build_and_load(arch, kwargs, backbone_state, path, "unitsface", all_keys=list(state))
    model = _wrap(backbone, path, "unitsface", arch, kwargs, quality_method=None, device=device)
    bias = losses.get("sample_to_sample_loss.bias")
    if bias is not None and bias.numel() == 1 and float(bias) > 0:  # b <= 0 means never initialised
        model.threshold = float(bias) / UNITSFACE_GAMMA
        model.info["threshold_source"] = "sample_to_sample_loss.bias / 64"
    return model


def _from_qualiface(obj: Mapping[str, Any], path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    if obj.get("format") != MODEL_FORMAT:
        raise ModelLoadError(
            f"{path}: not a qualiface model file (format {obj.get('format')!r}, expected {MODEL_FORMAT})"
        )
    missing_fields = [k for k in ("backbone", "state_dict") if k not in obj]
    if missing_fields:
        raise ModelLoadError(f"{path}: qualiface model file without {', '.join(missing_fields)}")
    name = arch or str(obj["backbone"])
    kwargs = {**dict(obj.get("backbone_kwargs") or {}), **overrides}
    state = _state_dict_of({"state_dict": obj["state_dict"]})
    backbone = _build_and_load(name, kwargs, state, path, "qualiface")
    if isinstance(obj.get("preprocessing"), Mapping):
        backbone.preprocessing = _coerce_preprocessing(obj["preprocessing"], backbone.preprocessing)
    head = obj.get("head") if isinstance(obj.get("head"), Mapping) else {}
    threshold = head.get("threshold")
    model = _wrap(
        backbone,
        path,
        "qualiface",
        name,
        kwargs,
        quality_method=_qualiface_quality(backbone, head.get("name")),
        device=device,
        keep_preprocessing=True,
    )
    model.threshold = None if threshold is None else float(threshold)
    model.info["head"] = dict(head)
    return model


def _load_directory(path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    """A run directory (``model.pt`` or ``checkpoints/``) or one checkpoint folder (``rank0.pt`` + ``COMPLETE``)."""
    if (path / "model.pt").is_file():
        obj = _torch_load(path / "model.pt")
        return _load_torch_object(obj, path / "model.pt", fmt=None, arch=arch, overrides=overrides, device=device)
    folder = path
    if (path / "checkpoints").is_dir():
        done = sorted(p for p in (path / "checkpoints").iterdir() if (p / "COMPLETE").is_file())
        if not done:
            raise ModelLoadError(f"{path}: a run directory without model.pt and without a complete checkpoint")
        folder = done[-1]
    rank0 = folder / "rank0.pt"
    if not rank0.is_file() or not (folder / "COMPLETE").is_file():
        raise ModelLoadError(
            f"{path}: not a qualiface run directory or complete checkpoint folder (no model.pt, rank0.pt)"
        )
    state = _torch_load(rank0)
    config = state.get("config") if isinstance(state, Mapping) else None
    if not isinstance(config, Mapping) or "backbone" not in state:
        raise ModelLoadError(f"{rank0}: not a qualiface training checkpoint (no backbone / config)")
    model_cfg = config.get("model") or {}
    name = arch or str(model_cfg.get("backbone"))
    kwargs = {**dict(model_cfg.get("kwargs") or {}), **overrides}
    backbone = _build_and_load(name, kwargs, _state_dict_of({"state_dict": state["backbone"]}), rank0, "qualiface")
    head_name = (config.get("head") or {}).get("name")
    model = _wrap(
        backbone,
        rank0,
        "qualiface",
        name,
        kwargs,
        quality_method=_qualiface_quality(backbone, head_name),
        device=device,
        keep_preprocessing=True,
    )
    model.info.update(step=state.get("step"), head={"name": head_name})
    return model


def _load_safetensors(path: Path, *, arch: str | None, overrides: dict, device: Any) -> FaceModel:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("loading .safetensors needs safetensors: pip install safetensors") from exc
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # safetensors raises its own error types
        raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != SAFETENSORS_FORMAT or "qualiface" not in metadata:
        # a foreign safetensors file holding an official state dict: detect the layout from the keys
        return _load_torch_object(state, path, fmt=None, arch=arch, overrides=overrides, device=device)
    info = json.loads(metadata["qualiface"])
    name = arch or info["backbone"]
    kwargs = {**dict(info.get("backbone_kwargs") or {}), **overrides}
    backbone = _build_and_load(name, kwargs, state, path, "safetensors")
    if isinstance(info.get("preprocessing"), Mapping):
        backbone.preprocessing = _coerce_preprocessing(info["preprocessing"], backbone.preprocessing)
    model = _wrap(
        backbone,
        path,
        "safetensors",
        name,
        kwargs,
        quality_method=info.get("quality_method"),
        device=device,
        keep_preprocessing=True,
    )
    model.threshold = info.get("threshold")
    model.info["source_format"] = info.get("source_format")
    return model


def _load_onnx(path: Path, *, device: Any, preprocessing: Preprocessing | Mapping[str, Any] | None) -> FaceModel:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("loading .onnx models needs onnxruntime: pip install 'qualiface[onnx]'") from exc
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: onnxruntime cannot load the model ({exc})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map or {})
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelLoadError(f"{path}: expected one N x 3 x H x W input, got {[(i.name, i.shape) for i in inputs]}")
    shape = inputs[0].shape
    height = shape[2] if isinstance(shape[2], int) else 112
    width = shape[3] if isinstance(shape[3], int) else 112
    quality_method: str | None = None
    name = path.name
    if meta.get("qualiface.format") == ONNX_FORMAT:
        prep = _coerce_preprocessing(json.loads(meta["qualiface.preprocessing"]), Preprocessing())
        quality_method = meta.get("qualiface.quality_method") or None
        name = f"{meta.get('qualiface.name', path.stem)} ({path.name})"
        threshold = float(meta["qualiface.threshold"]) if meta.get("qualiface.threshold") else None
    else:
        prep = Preprocessing(input_size=(3, height, width), source="onnx", **_guess_onnx_normalisation(path))
        threshold = None
        if "quality" in [o.name for o in session.get_outputs()]:
            quality_method = "cr_fiqa"
    if preprocessing is not None:
        prep = _coerce_preprocessing(preprocessing, prep)
    out_shape = session.get_outputs()[0].shape
    dim = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    if dim is None:
        import numpy as np

        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
        probe = np.zeros((batch, 3, height, width), dtype=np.float32)
        dim = int(np.asarray(session.run([session.get_outputs()[0].name], {inputs[0].name: probe})[0]).shape[-1])
    model = FaceModel(
        name=name,
        source_format="onnx",
        preprocessing=prep,
        embedding_dim=int(dim),
        session=session,
        quality_method=quality_method,
        threshold=threshold,
        device=device,
        path=str(path),
        info={"metadata": meta},
    )
    return model


def _guess_onnx_normalisation(path: Path) -> dict[str, Any]:
    """Normalisation of a foreign ONNX recognizer (protocols.md §6.3): OpenCV Zoo SFace takes raw 0..255 RGB;
    otherwise insightface's rule: ``Sub`` and ``Mul`` among the first 8 nodes mean in-graph normalisation
    (raw 0..255), else ``(x − 127.5) / 127.5``."""
    raw = {"channel_order": "RGB", "mean": (0.0,) * 3, "std": (1 / 255,) * 3}
    if "sface" in path.name.lower():
        return raw
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        return {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    graph = onnx.load(str(path), load_external_data=False).graph
    ops = [node.op_type for node in graph.node[:8]]
    names = [node.name for node in graph.node[:8]]
    has_sub = "Sub" in ops or any("_minus" in n for n in names)
    has_mul = "Mul" in ops or "Div" in ops or any("_mul" in n for n in names)
    if has_sub and has_mul:
        return raw
    return {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3}


# ---------------------------------------------------------------------------------------------------- helpers


def _qualiface_quality(backbone: Backbone, head_name: str | None) -> str | None:
    if backbone.quality_branch in ("cr_fiqa", "scaleface"):
        return backbone.quality_branch
    if head_name in ("magface", "adaface"):
        return "feature_norm"
    return None


def _embedding_kwargs(fc: Tensor | None) -> dict[str, Any]:
    """``embedding_dim`` and ``input_size`` implied by the embedding layer's weight ``(D, 512·side²)``."""
    kwargs: dict[str, Any] = {}
    if fc is not None and fc.ndim == 2:
        kwargs["embedding_dim"] = int(fc.shape[0])
        side = math.isqrt(max(int(fc.shape[1]) // 512, 0))
        if side > 0 and 512 * side * side == int(fc.shape[1]):
            kwargs["input_size"] = 16 * side
    return kwargs


def _infer_iresnet(state: Mapping[str, Tensor], path: Path, arch: str | None, fmt: str) -> tuple[str, dict[str, Any]]:
    """Registered iResNet name from the blocks per stage, and the kwargs implied by ``fc.weight``."""
    kwargs = _embedding_kwargs(state.get("fc.weight"))
    if arch is not None:
        return arch, kwargs
    counts = [0, 0, 0, 0]
    for key in state:
        match = re.match(r"^layer([1-4])\.(\d+)\.", key)
        if match:
            stage = int(match.group(1)) - 1
            counts[stage] = max(counts[stage], int(match.group(2)) + 1)
    name = _IRESNET_ARCHS.get(tuple(counts))  # type: ignore[arg-type]
    if name is None:
        keys = list(state)
        raise _mismatch(
            path,
            fmt,
            [],
            [],
            keys,
            what=f"blocks per stage {tuple(counts)} match no iResNet ({', '.join(_IRESNET_ARCHS.values())}); "
            f"pass arch= to force one",
        )
    return name, kwargs


def _infer_ir(state: Mapping[str, Tensor], path: Path, arch: str | None) -> tuple[str, dict[str, Any]]:
    """Registered IR / IR-SE name from the units per stage and the SE keys, kwargs from ``output_layer.3``."""
    kwargs = _embedding_kwargs(state.get("output_layer.3.weight"))
    if arch is not None:
        return arch, kwargs
    units = {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.", k))}
    starts = sorted({0} | {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.shortcut_layer\.0\.", k))})
    total = max(units) + 1 if units else 0
    layers = tuple(b - a for a, b in zip(starts, [*starts[1:], total], strict=True))
    se = any(".se_block." in k for k in state)
    name = _IR_ARCHS.get((layers, se))  # type: ignore[arg-type]
    if name is None:
        keys = list(state)
        raise _mismatch(
            path,
            "adaface",
            [],
            [],
            keys,
            what=f"units per stage {layers} (SE={se}) match no supported IR ({', '.join(_IR_ARCHS.values())}; "
            f"the bottleneck IR_152/IR_200 are not implemented); pass arch= to force one",
        )
    return name, kwargs


def _infer_mbf(state: Mapping[str, Tensor], path: Path) -> tuple[str, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    fc = state.get("features.layers.2.weight")
    if fc is not None:
        kwargs["embedding_dim"] = int(fc.shape[0])
    stem = state.get("layers.0.layers.0.weight")
    width = int(stem.shape[0]) if stem is not None else 0
    names = {128: "mobilefacenet", 256: "mobilefacenet_large"}
    if width not in names:
        keys = list(state)
        raise _mismatch(path, "insightface", [], [], keys, what=f"MobileFaceNet stem width {width} is not 128 or 256")
    return names[width], kwargs


def _build_and_load(
    name: str,
    kwargs: Mapping[str, Any],
    state: Mapping[str, Tensor],
    path: Path,
    fmt: str,
    *,
    all_keys: list[str] | None = None,
) -> Backbone:
    """Build ``name`` on the meta device, check keys and shapes strictly, then load the weights (assign)."""
    if name not in BACKBONES:
        raise ModelLoadError(f"{path}: unknown backbone {name!r}; registered: {', '.join(BACKBONES.names())}")
    try:
        with torch.device("meta"):
            backbone: Backbone = BACKBONES.create(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot build backbone {name!r} with {dict(kwargs)} ({exc})") from None
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise _mismatch(path, f"{fmt} ({name})", missing, unexpected, all_keys or list(state), shapes=shapes)
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    backbone.load_state_dict(weights, strict=True, assign=True)
    backbone.eval()
    backbone._qualiface_kwargs = dict(kwargs)  # type: ignore[attr-defined]  # read by the exporters
    return backbone


def _wrap(
    backbone: Backbone,
    path: Path,
    fmt: str,
    name: str,
    kwargs: Mapping[str, Any],
    *,
    quality_method: str | None,
    device: Any,
    keep_preprocessing: bool = False,
) -> FaceModel:
    """Attach the family's preprocessing (unless recorded in the file) and wrap the backbone."""
    if not keep_preprocessing:
        family = _FAMILY_PREPROCESSING["insightface" if fmt == "insightface" else fmt]
        backbone.preprocessing = replace(backbone.preprocessing, source=fmt, **family)
    return FaceModel(
        name=f"{name} ({path.name})",
        source_format=fmt,
        preprocessing=backbone.preprocessing,
        embedding_dim=backbone.embedding_dim,
        module=backbone,
        quality_method=quality_method,
        device=device,
        path=str(path),
        info={"backbone": name, "backbone_kwargs": dict(kwargs)},
    )


def _coerce_preprocessing(value: Preprocessing | Mapping[str, Any], base: Preprocessing) -> Preprocessing:
    """A :class:`Preprocessing` from a dict (lists become tuples; unknown fields are an error)."""
    if isinstance(value, Preprocessing):
        return value
    known = {f.name for f in fields(Preprocessing)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ModelLoadError(f"unknown preprocessing fields {unknown}; expected some of {sorted(known)}")
    items = {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()}
    for key in ("mean", "std"):
        if key in items and isinstance(items[key], (int, float)):
            items[key] = (float(items[key]),) * 3
    return replace(base, **items)


def _mismatch(
    path: Path,
    fmt: str,
    missing: list[str],
    unexpected: list[str],
    all_keys: list[str],
    *,
    shapes: list[str] | None = None,
    what: str = "",
) -> ModelLoadError:
    """The error for weights that do not fit: file, missing / unexpected keys (first few + counts), shape
    mismatches and the format the keys fit best."""

    def head(keys: list[str], n: int = 5) -> str:
        more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
        return ", ".join(keys[:n]) + more

    parts = [f"{path}: cannot load as {fmt}" + (f": {what}" if what else "")]
    if missing:
        parts.append(f"{len(missing)} missing keys: {head(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {head(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (file vs model): {head(shapes, 3)}")
    ranked = [(f, s) for f, s in guess_format(all_keys) if s > 0]
    if ranked:
        best, score = ranked[0]
        parts.append(
            f"most likely source format: {best} ({score:.0%} of {len(all_keys)} keys fit its layout); "
            f"force one with format= ({', '.join(FORMATS)}) and arch="
        )
    elif "no known" not in what:
        parts.append(f"the keys fit no known format ({', '.join(FORMATS)})")
    return ModelLoadError("; ".join(parts))
