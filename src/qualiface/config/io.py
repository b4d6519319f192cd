"""YAML in, typed :class:`ExperimentConfig` out: strict keys, checked types, dotted overrides.

    cfg = load_config("configs/synthetic_tiny.yaml", overrides=["train.steps=20", "head.name=magface"])

Unknown keys raise :class:`ConfigError` naming the dotted path and the closest valid key; values are checked
against the field's type (``int``, ``float``, ``bool``, ``str``, a ``Literal`` choice, lists, nested sections).
Override values are parsed as YAML (``train.steps=20`` is an int, ``head.kwargs.margin=0.3`` a float,
``eval.sets=[]`` a list). Components are checked against the registries when the config loads, and every value
against its range (:func:`check_components`): non-finite numbers are refused everywhere.

All YAML is read by :class:`StrictLoader` (:func:`load_yaml`): PyYAML's safe loader that refuses anchors and
aliases (a few nested aliases expand to gigabytes, "billion laughs") and duplicate mapping keys (the later one
would silently win), naming the source and the line. A config file over :data:`MAX_CONFIG_BYTES` is refused
before it is parsed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from qualiface.config.schema import ExperimentConfig
from qualiface.errors import InputError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(InputError):
    """An invalid configuration: names the file (when known), the dotted key and what was expected."""


#: The largest config file read (bytes); a training recipe is a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases and duplicate mapping keys with a :class:`ConfigError`
    ``"<source>:<line>: ..."``, raised while composing, before any alias could be expanded."""

    def __init__(self, stream: str, source: str = "<yaml>") -> None:
        super().__init__(stream)
        self.source = source

    def _refuse(self, event_or_node: yaml.Event | yaml.Node, message: str) -> ConfigError:
        mark = event_or_node.start_mark
        line = f":{mark.line + 1}" if mark is not None else ""  # marks count lines from 0
        return ConfigError(f"{self.source}{line}: {message}")

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # (untyped in types-PyYAML)
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(event, f"YAML aliases are not allowed (*{event.anchor})")
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise self._refuse(event, f"YAML anchors are not allowed (&{event.anchor})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' (its value, without aliases, is inline)
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeConstructor refuses it below
                continue
            if duplicate:
                raise self._refuse(key_node, f"duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    """PyYAML's error in one line, as ``(location, problem)``: ``"3:4"`` (line and column, or ``""``) and
    ``"expected ',' or ']', but got ':' (while parsing a flow sequence)"`` (its text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return where, f"{problem}" + (f" ({context})" if context else "")


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """One YAML document read by :class:`StrictLoader`; ``source`` names it in the errors."""
    loader = StrictLoader(text, source)
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except ValueError as exc:  # e.g. an integer over Python's digit limit for str -> int
        raise yaml.YAMLError(str(exc)) from None
    finally:
        loader.dispose()


class _PlainDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes shared objects out in full: no anchors, so :func:`load_yaml` reads it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """``data`` as block YAML, in its key order, without anchors or aliases."""
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


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
        try:
            return float(value)
        except OverflowError:  # an int beyond the float range
            raise ConfigError(f"{where}: must be a finite number, got {_show(value)}") from None
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
    """Set ``a.b.c=value`` in the nested ``data`` (value parsed as YAML by :func:`load_yaml`)."""
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
        node[parts[-1]] = load_yaml(raw, f"override {override!r}") if raw.strip() else None
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        at = f" at column {where.split(':')[1]}" if where else ""
        raise ConfigError(f"override {override!r}: the value is not valid YAML{at}: {problem}") from None


#: Bounds of the numeric fields (:func:`check_components`): far beyond any real run, small enough that no value
#: overflows a schedule or sizes an allocation without limit. The largest public face sets have ~2e6 identities
#: and ~4e7 images; a learning rate above 10 or a weight decay above 1 only diverges.
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
MAX_STEPS = 10**9
MAX_EPOCHS = 10**6
MAX_CLASSES = 10**8
MAX_EMBEDDING_DIM = 65_536
MAX_BATCH_SIZE = 65_536
MAX_ACCUMULATION = 65_536
MAX_WORKERS = 1_024
MAX_SYNTHETIC_SIZE = 1_024
MAX_SYNTHETIC_IMAGES = 10**8
MAX_PAIRS = 10**7
MAX_SEED = 2**63 - 1
MAX_DDP_TIMEOUT = 24 * 60  # minutes


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"  # repr of a huge int is long, or refused (Python 3.11+)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _limit(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else repr(value)


def _integer(where: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: must be an integer >= {_limit(low)} and <= {_limit(high)}, got {_show(value)}")


def _number(
    where: str, value: float, low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"{'>' if low_open else '>='} {_limit(low)}"
        if high is not None:
            bounds += f" and {'<' if high_open else '<='} {_limit(high)}"
        raise ConfigError(f"{where}: must be a finite number {bounds}, got {_show(value)}")


def _non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """The dotted path and value of the first NaN or infinity in ``value`` (nested dicts and lists), else ``None``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if isinstance(value, dict):
        items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, item in items:
        found = _non_finite(item, path)
        if found is not None:
            return found
    return None


def _check_values(cfg: ExperimentConfig) -> None:
    """Every numeric field within its range (the ``MAX_*`` bounds); NaN and infinities refused everywhere."""
    model, head, data, optim = cfg.model, cfg.head, cfg.data, cfg.optim
    schedule, train, evaluation, synthetic = cfg.schedule, cfg.train, cfg.eval, cfg.data.synthetic
    if "embedding_dim" in model.kwargs:
        _integer("model.kwargs.embedding_dim", model.kwargs["embedding_dim"], 1, MAX_EMBEDDING_DIM)
    _number("head.sample_rate", head.sample_rate, 0.0, 1.0, low_open=True)
    if data.num_classes is not None:
        _integer("data.num_classes", data.num_classes, 1, MAX_CLASSES)
    _integer("data.batch_size", data.batch_size, 1, MAX_BATCH_SIZE)
    _integer("data.num_workers", data.num_workers, 0, MAX_WORKERS)
    _number("data.augment_p", data.augment_p, 0.0, 1.0)
    _integer("data.synthetic.num_identities", synthetic.num_identities, 1, MAX_CLASSES)
    _integer("data.synthetic.images_per_identity", synthetic.images_per_identity, 1, MAX_SYNTHETIC_IMAGES)
    if synthetic.num_identities * synthetic.images_per_identity > MAX_SYNTHETIC_IMAGES:
        raise ConfigError(
            f"data.synthetic: num_identities × images_per_identity must be <= {_limit(MAX_SYNTHETIC_IMAGES)}, "
            f"got {synthetic.num_identities * synthetic.images_per_identity:,}"
        )
    _integer("data.synthetic.size", synthetic.size, 8, MAX_SYNTHETIC_SIZE)
    _integer("data.synthetic.seed", synthetic.seed, 0, MAX_SEED)
    for i, severity in enumerate(synthetic.severity_range):
        _number(f"data.synthetic.severity_range[{i}]", severity, 0.0, 1.0)
    if len(synthetic.severity_range) != 2 or synthetic.severity_range[0] > synthetic.severity_range[1]:
        raise ConfigError(
            "data.synthetic.severity_range: must be [low, high] with low <= high, "
            f"got {_show(synthetic.severity_range)}"
        )
    _number("data.synthetic.clean_fraction", synthetic.clean_fraction, 0.0, 1.0)
    _number("optim.lr", optim.lr, 0.0, MAX_LR, low_open=True)
    if optim.head_lr is not None:
        _number("optim.head_lr", optim.head_lr, 0.0, MAX_LR, low_open=True)
    _number("optim.momentum", optim.momentum, 0.0, 1.0, high_open=True)
    if optim.name == "sgd" and optim.nesterov and optim.momentum == 0:
        raise ConfigError("optim.nesterov: Nesterov momentum needs optim.momentum > 0")
    for i, beta in enumerate(optim.betas):
        _number(f"optim.betas[{i}]", beta, 0.0, 1.0, high_open=True)
    if len(optim.betas) != 2:
        raise ConfigError(f"optim.betas: must be two numbers [beta1, beta2], got {_show(optim.betas)}")
    _number("optim.weight_decay", optim.weight_decay, 0.0, MAX_WEIGHT_DECAY)
    if optim.head_weight_decay is not None:
        _number("optim.head_weight_decay", optim.head_weight_decay, 0.0, MAX_WEIGHT_DECAY)
    _number("schedule.warmup_epochs", schedule.warmup_epochs, 0.0, MAX_EPOCHS)
    _integer("schedule.warmup_steps", schedule.warmup_steps, 0, MAX_STEPS)
    _number("schedule.power", schedule.power, 0.0, low_open=True)
    for i, milestone in enumerate(schedule.milestones):
        _number(f"schedule.milestones[{i}]", milestone, 0.0, MAX_EPOCHS)
    _number("schedule.gamma", schedule.gamma, 0.0, 1.0, low_open=True)
    _number("schedule.min_lr_ratio", schedule.min_lr_ratio, 0.0, 1.0)
    if train.steps is None and train.epochs is None:
        raise ConfigError("train: set train.steps or train.epochs")
    if train.steps is not None:
        _integer("train.steps", train.steps, 1, MAX_STEPS)
    if train.epochs is not None:
        _number("train.epochs", train.epochs, 0.0, MAX_EPOCHS, low_open=True)
    if train.grad_clip is not None and not (math.isfinite(train.grad_clip) and train.grad_clip > 0):
        raise ConfigError(
            f"train.grad_clip: must be a finite number > 0 (or null for no clipping), got {_show(train.grad_clip)}"
        )
    _integer("train.seed", train.seed, 0, MAX_SEED)
    _integer("train.log_every", train.log_every, 1, MAX_STEPS)
    _integer("train.checkpoint_every", train.checkpoint_every, 1, MAX_STEPS)
    _integer("train.keep_checkpoints", train.keep_checkpoints, 1, MAX_STEPS)
    _integer("train.grad_accumulation", train.grad_accumulation, 1, MAX_ACCUMULATION)
    if train.checkpoint_every % train.grad_accumulation:
        raise ConfigError(
            f"train.checkpoint_every: must be a multiple of train.grad_accumulation ({train.grad_accumulation}) so"
            f" that no checkpoint holds a half-accumulated gradient, got {train.checkpoint_every}"
        )
    _number("train.ddp_timeout", train.ddp_timeout, 0.0, MAX_DDP_TIMEOUT, low_open=True)
    _integer("eval.every", evaluation.every, 0, MAX_STEPS)
    _integer("eval.batch_size", evaluation.batch_size, 1, MAX_BATCH_SIZE)
    for i, source in enumerate(evaluation.sets):
        _integer(f"eval.sets[{i}].num_pairs", source.num_pairs, 1, MAX_PAIRS)
        if source.kind == "synthetic" and source.num_pairs % 2:
            raise ConfigError(f"eval.sets[{i}].num_pairs: synthetic pairs need an even count, got {source.num_pairs}")
    found = _non_finite(to_dict(cfg), "")
    if found is not None:  # in the components' kwargs: the fields above are already checked
        raise ConfigError(f"{found[0]}: must be a finite number, got {found[1]!r}")


def check_components(cfg: ExperimentConfig) -> None:
    """Registry names exist and every value is in its range; raises :class:`ConfigError`."""
    import qualiface.backbones
    import qualiface.heads  # noqa: F401  (registers the components)
    from qualiface.registry import BACKBONES, HEADS

    for where, name, registry in (
        ("model.backbone", cfg.model.backbone, BACKBONES),
        ("head.name", cfg.head.name, HEADS),
    ):
        if name not in registry:
            raise ConfigError(f"{where}: unknown {registry.family} {name!r}{_hint(name, registry.names())}")
    _check_values(cfg)
    for i, source in enumerate(cfg.eval.sets):
        if source.kind in ("bin", "pairs") and not source.path:
            raise ConfigError(f"eval.sets[{i}]: kind {source.kind!r} needs a path")


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A checked :class:`ExperimentConfig` from nested dicts plus ``key=value`` overrides."""
    data = load_yaml(dump_yaml(data), "config") if data else {}  # deep copy, plain types
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
            with path.open("rb") as file:
                raw = file.read(MAX_CONFIG_BYTES + 1)  # bounded read: a device or a pipe is refused too
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: the config is larger than {MAX_CONFIG_BYTES:,} bytes; refused unread")
        try:
            data = load_yaml(raw.decode("utf-8"), str(path))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: the config is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            where, problem = yaml_problem(exc)
            raise ConfigError(f"{path}:{where + ':' if where else ''} not valid YAML: {problem}") from None
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
    text = dump_yaml(to_dict(cfg))
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
