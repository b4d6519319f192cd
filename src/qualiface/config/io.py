"""YAML in, typed :class:`ExperimentConfig` out: strict keys, checked types, dotted overrides.

    cfg = load_config("configs/synthetic_tiny.yaml", overrides=["train.steps=20", "head.name=magface"])

Unknown keys raise :class:`ConfigError` naming the dotted path and the closest valid key; values are checked
against the field's type (``int``, ``float``, ``bool``, ``str``, a ``Literal`` choice, lists, nested sections).
Override values are parsed with ``yaml.safe_load`` (``train.steps=20`` is an int, ``head.kwargs.margin=0.3``
a float, ``eval.sets=[]`` a list). Components are checked against the registries when the config loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from qualiface.config.schema import ExperimentConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """An invalid configuration: names the file (when known), the dotted key and what was expected."""


def _hint(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = get_args(tp) or (Any,)
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {key!r}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a field's type is a class, never an instance
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 without a dot as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover - schema bug


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and ill-typed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {path!r}{_hint(str(key), names)}")
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts and lists (YAML/JSON-ready)."""
    return dataclasses.asdict(cfg)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the nested ``data`` (value parsed with ``yaml.safe_load``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like key.path=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({exc})") from exc


def check_components(cfg: ExperimentConfig) -> None:
    """Registry names exist, and simple ranges hold; raises :class:`ConfigError`."""
    import qualiface.backbones
    import qualiface.heads  # noqa: F401  (registers the components)
    from qualiface.registry import BACKBONES, HEADS

    for where, name, registry in (
        ("model.backbone", cfg.model.backbone, BACKBONES),
        ("head.name", cfg.head.name, HEADS),
    ):
        if name not in registry:
            raise ConfigError(f"{where}: unknown {registry.family} {name!r}{_hint(name, registry.names())}")
    checks = [
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        ("data.num_workers", cfg.data.num_workers >= 0, "must be >= 0"),
        ("head.sample_rate", 0.0 < cfg.head.sample_rate <= 1.0, "must be in (0, 1]"),
        ("optim.lr", cfg.optim.lr > 0, "must be positive"),
        ("train.log_every", cfg.train.log_every >= 1, "must be >= 1"),
        ("train.checkpoint_every", cfg.train.checkpoint_every >= 1, "must be >= 1"),
        ("train.keep_checkpoints", cfg.train.keep_checkpoints >= 1, "must be >= 1"),
        ("eval.every", cfg.eval.every >= 0, "must be >= 0"),
    ]
    if cfg.train.steps is None and cfg.train.epochs is None:
        raise ConfigError("train: set train.steps or train.epochs")
    if cfg.train.steps is not None:
        checks.append(("train.steps", cfg.train.steps >= 1, "must be >= 1"))
    if cfg.train.epochs is not None:
        checks.append(("train.epochs", cfg.train.epochs > 0, "must be positive"))
    if cfg.train.grad_clip is not None:
        checks.append(("train.grad_clip", cfg.train.grad_clip > 0, "must be positive (or null for no clipping)"))
    for where, ok, message in checks:
        if not ok:
            raise ConfigError(f"{where} {message}")
    for i, source in enumerate(cfg.eval.sets):
        if source.kind in ("bin", "pairs") and not source.path:
            raise ConfigError(f"eval.sets[{i}]: kind {source.kind!r} needs a path")


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A checked :class:`ExperimentConfig` from nested dicts plus ``key=value`` overrides."""
    data = yaml.safe_load(yaml.safe_dump(data)) if data else {}  # deep copy, plain types
    for override in overrides:
        apply_override(data, override)
    cfg = from_dict(ExperimentConfig, data)
    check_components(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML experiment (``None``: the defaults) and apply overrides; errors name the file."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def dump_config(cfg: ExperimentConfig, path: str | Path | None = None) -> str:
    """The resolved config as YAML text; also written to ``path`` when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
