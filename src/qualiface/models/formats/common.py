"""What the checkpoint formats share: reading torch files safely, unwrapping state dicts, inferring the
architecture from the keys, building and strictly loading a backbone, naming mismatches, and finishing a
:class:`~qualiface.models.face_model.FaceModel` with its :class:`~qualiface.models.card.ModelCard`."""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.errors import InputError
from qualiface.models.card import ModelCard, QualityInfo, ThresholdInfo, file_sha256
from qualiface.models.face_model import FaceModel
from qualiface.models.formats.tensor_bounds import declared_budget, named_tensors, unbounded_tensor
from qualiface.registry import BACKBONES


class ModelLoadError(InputError):
    """A file that cannot be loaded as the requested (or detected) model: names the file, the missing and
    unexpected keys, and the source format the keys fit best."""


@dataclass
class LoadRequest:
    """What the caller of :func:`~qualiface.models.load_model` asked for, handed to a format's ``load``."""

    path: Path
    arch: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: Any = "cpu"
    preprocessing: Callable[[Preprocessing], Preprocessing] | None = None  # the caller's statement
    hash_path: Path | None = None  # the file whose bytes identify the model (default: ``path``)
    describe_only: bool = False  # qualiface info: an unknowable preprocessing is marked unknown, not refused
    _sha256: str | None = None

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the model file (computed once)."""
        target = self.hash_path or self.path
        if self._sha256 is None and target.is_file():
            self._sha256 = file_sha256(target)
        return self._sha256


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
IRESNET_KEYS = (
    rf"(conv1\.weight|bn1\.{_BN}|prelu\.weight"
    rf"|layer[1-4]\.\d+\.(bn[123]\.{_BN}|conv[12]\.weight|prelu\.weight|downsample\.0\.weight|downsample\.1\.{_BN})"
    rf"|bn2\.{_BN}|fc\.(weight|bias)|features\.{_BN})"
)
IR_KEYS = (
    rf"(input_layer\.0\.weight|input_layer\.1\.{_BN}|input_layer\.2\.weight"
    rf"|body\.\d+\.(shortcut_layer\.0\.weight|shortcut_layer\.1\.{_BN}"
    rf"|res_layer\.[1-4]\.weight|res_layer\.[0-5]\.{_BN}|res_layer\.se_block\.fc[12]\.weight)"
    rf"|output_layer\.0\.{_BN}|output_layer\.3\.(weight|bias)|output_layer\.4\.{_BN})"
)
MBF_KEYS = rf"((layers\.\d+|conv_sep|features)(\.layers\.\d+)+\.{_BN}|features\.layers\.2\.weight)"
UNITS_KEYS = (
    rf"(conv1\.weight|bn1\.{_BN}|prelu\.weight"
    rf"|layer[1-4]\.\d+\.(bn[012]\.{_BN}|conv[12]\.weight|prelu\.weight|downsample\.0\.weight|downsample\.1\.{_BN})"
    rf"|bn4\.{_BN}|fc5\.weight|bn5\.{_BN}|sample_to_(class|sample)_loss\..+)"
)
SCALE_HEAD_KEYS = r"mlp\.\d+\.(weight|bias|running_mean|running_var|num_batches_tracked)"


IRESNET_ARCHS = {
    (2, 2, 2, 2): "iresnet18",
    (3, 4, 6, 3): "iresnet34",
    (3, 4, 14, 3): "iresnet50",
    (3, 13, 30, 3): "iresnet100",
    (6, 26, 60, 6): "iresnet200",
}
#: ``(units per stage, SE)`` -> registered IR name (looked up with the counts read from a state dict).
IR_ARCHS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "ir_18",
    ((3, 4, 6, 3), False): "ir_34",
    ((3, 4, 14, 3), False): "ir_50",
    ((3, 13, 30, 3), False): "ir_101",
    ((3, 4, 14, 3), True): "ir_se_50",
    ((3, 13, 30, 3), True): "ir_se_101",
}

LRESNET_ARCHS = {(3, 4, 14, 3): "lresnet50eir", (3, 13, 30, 3): "lresnet100eir", (3, 33, 60, 3): "lresnet200eir"}


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a file whose tensors are checked before anything allocates their size.

    A pickled Python object is refused with an explanation; a tensor that declares more than its storage holds
    (a broadcast view, overlapping strides) or a file whose tensors declare more than a few times its size is
    refused naming the tensor (:mod:`qualiface.models.formats.tensor_bounds`). A zip file (every ``torch.save``
    since PyTorch 1.6) allocates only the storages it holds, which torch checks against their records; a legacy
    file declares its storage sizes in the pickle, so it is first read without data (a fake-tensor pass) and its
    storages are bounded by the file's size before the real read.

    Raises:
        ModelLoadError: an unreadable or refused file (one line, naming the file).
    """
    import argparse
    import pathlib

    # Lightning hyper-parameters
    benign: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        argparse.Namespace,
        pathlib.PosixPath,
        pathlib.PurePosixPath,
    ]
    try:
        with torch.serialization.safe_globals(benign):
            budget = declared_budget(path.stat().st_size)
            if not _is_zip(path):
                _check_bounds(_load_without_data(path), path, budget, storages=True)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_refused(path, exc) from None
    except ModelLoadError:
        raise
    except Exception as exc:  # a corrupt pickle raises anything (KeyError, struct.error, ...)
        raise ModelLoadError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None
    _check_bounds(obj, path, budget)
    return obj


def _is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _load_without_data(path: Path) -> Any:
    """The legacy file's tensors on fake storages of their declared sizes (nothing allocated, no data read)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.load(path, map_location="cpu", weights_only=True)


def _check_bounds(obj: Any, path: Path, budget: int, *, storages: bool = False) -> None:
    """Refuse unbounded tensors; with ``storages`` also storages (counted per tensor) over ``budget`` bytes."""
    problem = unbounded_tensor(obj, budget)
    if problem is None and storages:
        total = 0
        for name, tensor in named_tensors(obj):
            total += tensor.untyped_storage().nbytes()
            if total > budget:
                problem = f"the storages up to tensor {name!r} declare {total} bytes, more than the file's size allows"
                break
    if problem is not None:
        raise ModelLoadError(f"{path}: refused: {problem} (file of {path.stat().st_size} bytes)")


def _unpickling_refused(path: Path, exc: pickle.UnpicklingError) -> ModelLoadError:
    try:
        needed = [str(g) for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)]
    except Exception:  # not a zip checkpoint
        needed = []
    if not needed and "unsupported global" not in str(exc).lower():
        reason = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        return ModelLoadError(f"{path}: not a readable PyTorch file ({reason})")
    module_hint = ""
    if any("torch.nn.modules" in g or "LResNet" in g or "backbone" in g for g in needed):
        module_hint = (
            " It looks like a whole pickled nn.Module (e.g. UniTSFace's *_th_epoch.pth, saved with "
            "torch.save(net)); re-save its weights with torch.save(net.state_dict(), ...) in a trusted "
            "environment, or use the *_checkpoint.tar state dict."
        )
    objects = f" It references Python objects: {', '.join(needed[:8])}." if needed else ""
    return ModelLoadError(
        f"{path}: refused to load: the file contains pickled Python objects, and unpickling them could run "
        f"arbitrary code (qualiface loads with torch.load(weights_only=True)).{objects}{module_hint}"
    )


def flat_keys(obj: Any) -> list[str]:
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


def state_dict_of(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}


def embedding_kwargs(fc: Tensor | None) -> dict[str, Any]:
    """``embedding_dim`` and ``input_size`` implied by the embedding layer's weight ``(D, 512·side²)``."""
    kwargs: dict[str, Any] = {}
    if fc is not None and fc.ndim == 2:
        kwargs["embedding_dim"] = int(fc.shape[0])
        side = math.isqrt(max(int(fc.shape[1]) // 512, 0))
        if side > 0 and 512 * side * side == int(fc.shape[1]):
            kwargs["input_size"] = 16 * side
    return kwargs


def infer_iresnet(state: Mapping[str, Tensor], path: Path, arch: str | None, fmt: str) -> tuple[str, dict[str, Any]]:
    """Registered iResNet name from the blocks per stage, and the kwargs implied by ``fc.weight``."""
    kwargs = embedding_kwargs(state.get("fc.weight"))
    if arch is not None:
        return arch, kwargs
    counts = blocks_per_stage(state)
    name = IRESNET_ARCHS.get(counts)
    if name is None:
        keys = list(state)
        raise mismatch(
            path,
            fmt,
            [],
            [],
            keys,
            what=f"blocks per stage {tuple(counts)} match no iResNet ({', '.join(IRESNET_ARCHS.values())}); "
            f"pass arch= to force one",
        )
    return name, kwargs


def infer_ir(state: Mapping[str, Tensor], path: Path, arch: str | None) -> tuple[str, dict[str, Any]]:
    """Registered IR / IR-SE name from the units per stage and the SE keys, kwargs from ``output_layer.3``."""
    kwargs = embedding_kwargs(state.get("output_layer.3.weight"))
    if arch is not None:
        return arch, kwargs
    units = {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.", k))}
    starts = sorted({0} | {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.shortcut_layer\.0\.", k))})
    total = max(units) + 1 if units else 0
    layers = tuple(b - a for a, b in zip(starts, [*starts[1:], total], strict=True))
    se = any(".se_block." in k for k in state)
    name = IR_ARCHS.get((layers, se))
    if name is None:
        keys = list(state)
        raise mismatch(
            path,
            "adaface",
            [],
            [],
            keys,
            what=f"units per stage {layers} (SE={se}) match no supported IR ({', '.join(IR_ARCHS.values())}; "
            f"the bottleneck IR_152/IR_200 are not implemented); pass arch= to force one",
        )
    return name, kwargs


def infer_mbf(state: Mapping[str, Tensor], path: Path) -> tuple[str, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    fc = state.get("features.layers.2.weight")
    if fc is not None:
        kwargs["embedding_dim"] = int(fc.shape[0])
    stem = state.get("layers.0.layers.0.weight")
    width = int(stem.shape[0]) if stem is not None else 0
    names = {128: "mobilefacenet", 256: "mobilefacenet_large"}
    if width not in names:
        keys = list(state)
        raise mismatch(path, "insightface", [], [], keys, what=f"MobileFaceNet stem width {width} is not 128 or 256")
    return names[width], kwargs


def build_and_load(
    name: str,
    kwargs: Mapping[str, Any],
    state: Mapping[str, Tensor],
    request: LoadRequest,
    fmt: str,
    *,
    path: Path | None = None,
    all_keys: list[str] | None = None,
) -> Backbone:
    """Build ``name`` with ``kwargs`` and the caller's ``request.overrides`` on the meta device, check keys and
    shapes strictly, then load the weights (assign). The arguments used are kept as ``backbone.arch_kwargs``
    (what :func:`finish` records). ``path``: the file named in errors (default ``request.path``)."""
    path = request.path if path is None else path
    kwargs = {**kwargs, **request.overrides}
    if name not in BACKBONES:
        raise ModelLoadError(f"{path}: unknown backbone {name!r}; registered: {', '.join(BACKBONES.names())}")
    try:
        with torch.device("meta"):
            backbone: Backbone = BACKBONES.create(name, **kwargs)
    except (TypeError, ValueError, RuntimeError, AttributeError, LookupError, ArithmeticError) as exc:
        # the arguments come from the file (a card, backbone_kwargs): whatever the constructor makes of them
        reason = str(exc) if isinstance(exc, TypeError | ValueError) else f"{type(exc).__name__}: {exc}"
        raise ModelLoadError(f"{path}: cannot build backbone {name!r} with {dict(kwargs)} ({reason})") from None
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    shapes += [
        f"{k} {state[k].dtype} vs {own[k].dtype}"
        for k in own
        if k in state and own[k].is_floating_point() != state[k].is_floating_point()
    ]
    if missing or unexpected or shapes:
        raise mismatch(path, f"{fmt} ({name})", missing, unexpected, all_keys or list(state), shapes=shapes)
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        backbone.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # what the checks above do not foresee: still the file's weights
        raise ModelLoadError(
            f"{path}: cannot load the weights into {name!r} ({' '.join(str(exc).split())[:300]})"
        ) from None
    backbone.eval()
    backbone.arch_kwargs = dict(kwargs)
    return backbone


def mismatch(
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
    from qualiface.models.formats.base import format_names, guess_format

    ranked = [(f, s) for f, s in guess_format(all_keys) if s > 0]
    if ranked:
        best, score = ranked[0]
        parts.append(
            f"most likely source format: {best} ({score:.0%} of {len(all_keys)} keys fit its layout); "
            f"force one with format= ({', '.join(format_names())}) and arch="
        )
    elif "no known" not in what:
        parts.append(f"the keys fit no known format ({', '.join(format_names())})")
    return ModelLoadError("; ".join(parts))


def infer_lresnet(state: Mapping[str, Tensor], path: Path, arch: str | None) -> tuple[str, dict[str, Any]]:
    """Registered LResNetXEIR name from the blocks per stage, kwargs from the 4-D ``fc5.weight``."""
    kwargs: dict[str, Any] = {}
    fc5 = state.get("fc5.weight")
    if fc5 is not None and fc5.ndim == 4:
        kwargs = {"embedding_dim": int(fc5.shape[0]), "input_size": 16 * int(fc5.shape[-1])}
    if arch is not None:
        return arch, kwargs
    counts = blocks_per_stage(state)
    name = LRESNET_ARCHS.get(counts)
    if name is None:
        raise mismatch(
            path,
            "unitsface",
            [],
            [],
            list(state),
            what=f"blocks per stage {counts} match no LResNetXEIR ({', '.join(LRESNET_ARCHS.values())}); "
            f"pass arch= to force one",
        )
    return name, kwargs


def blocks_per_stage(state: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Blocks of each of the 4 stages from ``layer{1..4}.{i}.`` keys."""
    counts = [0, 0, 0, 0]
    for key in state:
        match = re.match(r"^layer([1-4])\.(\d+)\.", key)
        if match:
            stage = int(match.group(1)) - 1
            counts[stage] = max(counts[stage], int(match.group(2)) + 1)
    return (counts[0], counts[1], counts[2], counts[3])


def finish(
    backbone: Backbone,
    request: LoadRequest,
    fmt: str,
    arch: str,
    *,
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    quality: Sequence[QualityInfo] = (),
    thresholds: Sequence[ThresholdInfo] = (),
    provenance: Mapping[str, Any] | None = None,
    licence: str | None = None,
    name: str | None = None,
    info: Mapping[str, Any] | None = None,
) -> FaceModel:
    """The :class:`FaceModel` of a loaded backbone, with its card: ``preprocessing`` is the family's (items on
    top of the backbone's own description) unless the file recorded one."""
    prep = backbone.preprocessing
    if isinstance(preprocessing, Preprocessing):
        prep = preprocessing
    elif preprocessing is not None:
        prep = replace(prep, source=fmt, **dict(preprocessing))
    backbone.preprocessing = prep
    card = ModelCard(
        name=name or f"{arch} ({request.path.name})",
        source_format=fmt,
        embedding_dim=int(backbone.embedding_dim),
        preprocessing=prep,
        architecture=arch,
        architecture_kwargs=dict(backbone.arch_kwargs),
        quality=tuple(quality),
        thresholds=tuple(thresholds),
        weights_sha256=request.sha256,
        provenance={**dict(provenance or {}), "file": request.path.name},
        licence=licence,
    )
    return FaceModel(
        card,
        module=backbone,
        device=request.device,
        path=str(request.path),
        info={"backbone": arch, "backbone_kwargs": dict(backbone.arch_kwargs), **dict(info or {})},
    )


def branch_quality(branch: str | None) -> tuple[QualityInfo, ...]:
    """The card's quality entry for a backbone's quality branch (none without one)."""
    if branch is None:
        return ()
    from qualiface.quality.branches import get_branch

    return (QualityInfo(method=branch, source="branch", description=get_branch(branch).meaning),)


def head_quality(head_name: str | None) -> tuple[QualityInfo, ...]:
    """The card's quality entry for the embedding norm that a head's training shapes (MagFace, AdaFace)."""
    from qualiface.registry import HEADS

    if head_name is None or head_name not in HEADS:
        return ()
    method = getattr(HEADS.get(head_name), "trained_quality", None)
    if method != "feature_norm":
        return ()
    return (QualityInfo(method="feature_norm", source="head", description=f"embedding norm trained by {head_name}"),)
