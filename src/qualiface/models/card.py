"""The model card: one typed, versioned record of what a face model is.

A :class:`ModelCard` says everything a result depends on: the model's name and source format, its architecture
and constructor arguments, the embedding size, the preprocessing (channel order, input size, resize policy,
mean/std in one unit, flip fusion), the quality it outputs (method, where it comes from, direction, observed
range), its decision thresholds with their provenance (learned in training, calibrated at an FMR on N pairs),
the SHA-256 of the weights file, and provenance and licence fields.

Training writes the card into ``model.pt``; ``qualiface export`` writes it into the ONNX metadata
(``qualiface.card``) and the safetensors header; ``qualiface calibrate`` adds a calibrated threshold (stored in
the calibration file next to the model, bound to the weights' SHA-256); :func:`qualiface.models.load_model` reads
it and ``qualiface info MODEL`` prints it. Outputs of ``embed``, ``quality``, ``verify`` and ``eval verify`` carry
:meth:`ModelCard.stamp` (name, SHA-256, preprocessing).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from qualiface.backbones.base import Preprocessing
from qualiface.models.card_curves import MAX_KNOTS as MAX_KNOTS  # the card's records, importable from here too
from qualiface.models.card_curves import ConfidenceCurve, QualityCalibration
from qualiface.models.card_curves import QualityScale as QualityScale
from qualiface.models.card_curves import check_prior as check_prior
from qualiface.models.card_errors import CardError as CardError

CARD_FORMAT = "qualiface.card/1"
#: ``Preprocessing.source`` of a model loaded only to be described (``qualiface info``) whose preprocessing is unknown.
UNKNOWN_PREPROCESSING = "unknown"

QualitySource = Literal["branch", "head", "embedding_norm"]
ThresholdKind = Literal["learned", "calibrated", "given"]
#: The threshold kinds: learned in training, calibrated at a false-match rate, given by the user.
THRESHOLD_KINDS = ("learned", "calibrated", "given")

#: Named preprocessings, in the one unit of :class:`Preprocessing` (mean/std on pixel / 255).
PREPROCESSING_PRESETS: dict[str, dict[str, Any]] = {
    "arcface": {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (0.5,) * 3},  # insightface, CR-FIQA, UniTSFace
    "raw": {"channel_order": "RGB", "mean": (0.0,) * 3, "std": (1 / 255,) * 3},  # 0..255 pixels as they are (SFace)
    "raw_bgr": {"channel_order": "BGR", "mean": (0.0,) * 3, "std": (1 / 255,) * 3},
    "adaface": {"channel_order": "BGR", "mean": (0.5,) * 3, "std": (0.5,) * 3},
    "magface": {"channel_order": "BGR", "mean": (0.0,) * 3, "std": (1.0,) * 3},
    "scaleface": {"channel_order": "RGB", "mean": (0.5,) * 3, "std": (128 / 255,) * 3},
}
_PREPROCESSING_KEYS = {
    "channel_order": "channel_order",
    "order": "channel_order",
    "mean": "mean",
    "std": "std",
    "size": "input_size",
    "input_size": "input_size",
    "flip": "flip_fusion",
    "flip_fusion": "flip_fusion",
    "resize": "resize",
}
PREPROCESSING_HELP = (
    "a preset (" + ", ".join(PREPROCESSING_PRESETS) + ") and/or comma-separated key=value among channel_order=RGB|BGR, "
    "mean=M or M1/M2/M3, std=S or S1/S2/S3 (on pixel/255: input = (pixel/255 - mean)/std), size=112 or HxW, "
    "flip=none|sum, resize=area|bilinear|none; e.g. 'raw' (0..255 RGB) or 'arcface,flip=sum'"
)


#: The longest JSON text read as a card or a sidecar file (a card is a few KB).
MAX_JSON_CHARS = 1 << 20


def parse_json(text: str | bytes, where: str) -> Any:
    """The value of the JSON text of a card or a sidecar file, read within bounds.

    Raises:
        CardError: (naming ``where``) text over :data:`MAX_JSON_CHARS`, bytes that are not UTF-8, text that is not
            JSON, ``NaN`` / ``Infinity`` (JSON has no such numbers), or arrays and objects nested too deeply.
    """
    if len(text) > MAX_JSON_CHARS:
        raise CardError(f"{where}: {len(text)} characters of JSON, more than the {MAX_JSON_CHARS} read")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise CardError(f"{where}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CardError(f"{where}: not valid JSON ({exc})") from None
    except ValueError as exc:  # _no_constant
        raise CardError(f"{where}: {exc}") from None
    except RecursionError:
        raise CardError(f"{where}: JSON arrays or objects nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


# ------------------------------------------------------------------------------------------------ preprocessing


def preprocessing_from_dict(value: Mapping[str, Any], base: Preprocessing | None = None) -> Preprocessing:
    """A :class:`Preprocessing` from its dict form (lists become tuples, one number becomes three, unknown fields
    are an error), on top of ``base``."""
    if not isinstance(value, Mapping):
        raise CardError(f"preprocessing must be a JSON object, got {type(value).__name__}")
    known = {f.name for f in fields(Preprocessing)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise CardError(f"unknown preprocessing fields {unknown}; expected some of {sorted(known)}")
    items: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()}
    for key in ("mean", "std"):
        if key in items and isinstance(items[key], int | float):
            items[key] = (float(items[key]),) * 3
    try:
        return replace(base or Preprocessing(), **items)
    except (TypeError, ValueError) as exc:
        raise CardError(str(exc)) from None


def parse_preprocessing(text: str, base: Preprocessing | None = None) -> Preprocessing:
    """The preprocessing that ``--preprocessing TEXT`` states (see :data:`PREPROCESSING_HELP`), on top of
    ``base`` (the model's own, when it has one)."""
    return preprocessing_from_dict(preprocessing_items(text), base)


def preprocessing_items(text: str) -> dict[str, Any]:
    """The :class:`Preprocessing` fields that ``--preprocessing TEXT`` states (unchecked until applied)."""
    items: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            if part.lower() not in PREPROCESSING_PRESETS:
                raise CardError(f"--preprocessing: unknown preset {part!r}; {PREPROCESSING_HELP}")
            items.update(PREPROCESSING_PRESETS[part.lower()])
            continue
        key, raw = (s.strip() for s in part.split("=", 1))
        field_name = _PREPROCESSING_KEYS.get(key.lower())
        if field_name is None:
            raise CardError(f"--preprocessing: unknown key {key!r}; {PREPROCESSING_HELP}")
        items[field_name] = _preprocessing_value(field_name, raw, key)
    if not items:
        raise CardError(f"--preprocessing: empty; {PREPROCESSING_HELP}")
    return items


def _preprocessing_value(field_name: str, raw: str, key: str) -> Any:
    if field_name in ("mean", "std"):
        try:
            values = [_number(v) for v in raw.split("/")] if raw.count("/") == 2 else [_number(raw)]
        except ValueError:
            raise CardError(f"--preprocessing: {key}={raw!r} is not one number or three separated by '/'") from None
        return tuple(values * 3 if len(values) == 1 else values)
    if field_name == "input_size":
        sides = raw.lower().split("x")
        try:
            height, width = (int(sides[0]), int(sides[-1])) if len(sides) <= 2 else (0, 0)
        except ValueError:
            height = width = 0
        if height <= 0 or width <= 0:
            raise CardError(f"--preprocessing: size={raw!r} is not N or HxW")
        return (3, height, width)
    if field_name == "channel_order":
        return raw.upper()
    return raw.lower()


def _number(text: str) -> float:
    """A float, also written as a fraction such as ``1/255`` is not allowed here (``/`` separates channels)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# ------------------------------------------------------------------------------------------------ card records


@dataclass(frozen=True)
class QualityInfo:
    """The quality a model outputs.

    Attributes:
        method: ``"cr_fiqa"``, ``"scaleface"`` (a quality branch's output) or ``"feature_norm"``.
        source: ``"branch"`` (a trained quality branch), ``"head"`` (the embedding norm that a MagFace or AdaFace
            head trains to follow quality) or ``"embedding_norm"`` (the norm of a recognizer's raw output, which
            its training did not aim at quality: a heuristic, labelled as such).
        higher_is_better: Direction of the score (always ``True`` for the methods here).
        observed_range: ``(min, max)`` of the scores on the calibration images, when calibrated.
        description: One line for people.
    """

    method: str
    source: QualitySource
    higher_is_better: bool = True
    observed_range: tuple[float, float] | None = None
    description: str = ""

    @property
    def label(self) -> str:
        """``method`` with ``(untrained)`` appended for a plain embedding norm."""
        return f"{self.method} (untrained)" if self.source == "embedding_norm" else self.method


@dataclass(frozen=True)
class ThresholdInfo:
    """A cosine decision threshold and where it comes from (``similarity >= value`` is a match).

    A ``"learned"`` threshold (UniTSFace's ``b / γ``) was learned on single-view training-mode similarities, not
    on the fused features decisions compare, so it decides only when asked for (``--threshold learned``);
    ``qualiface calibrate`` measures what it gives (``fmr_measured``, ``fnmr`` on ``pairs``).

    Attributes:
        value: The threshold, finite and within [-1, 1].
        kind: ``"learned"`` (in training, e.g. UniTSFace's ``b / γ``), ``"calibrated"`` (at a false-match rate) or
            ``"given"`` (set by the user, ``model.threshold = t``).
        fmr: Target false-match rate of a calibration.
        fmr_measured / fnmr: What the threshold gives on the calibration pairs (for a learned threshold: on the
            pairs of the latest calibration, ``None`` until one measured it).
        n_genuine / n_impostor: Calibration pairs used.
        pairs: The pair list it was calibrated (or measured) on.
        created: ISO time of the calibration.
        source: Free text (e.g. the checkpoint key a learned threshold was read from).
    """

    value: float
    kind: ThresholdKind
    metric: str = "cosine"
    fmr: float | None = None
    fmr_measured: float | None = None
    fnmr: float | None = None
    n_genuine: int | None = None
    n_impostor: int | None = None
    pairs: str | None = None
    created: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        check_threshold(self.value, "threshold")
        if self.kind not in THRESHOLD_KINDS:
            raise CardError(f"threshold kind {self.kind!r}: expected one of {', '.join(THRESHOLD_KINDS)}")
        fmr: object = self.fmr  # as read from a card: any JSON value
        if fmr is not None and not (isinstance(fmr, int | float) and 0.0 < fmr < 1.0):
            raise CardError(f"threshold fmr {self.fmr!r}: expected a number in (0, 1)")

    def describe(self) -> str:
        if self.kind == "calibrated":
            return (
                f"{self.value:.6f} calibrated at FMR {self.fmr:g} on {self.n_impostor} impostor / {self.n_genuine} "
                f"genuine pairs ({self.pairs})"
            )
        if self.kind == "given":
            return f"{self.value:.6f} given ({self.source or 'by the user'})"
        return f"{self.value:.6f} learned in training ({self.source or 'model'})"

    @property
    def measured(self) -> bool:
        """Whether the false-match rate on calibration pairs is known."""
        return self.fmr_measured is not None and bool(self.n_impostor)

    def rates(self) -> str:
        """What the threshold gives on the calibration pairs, for people: ``FMR a, FNMR b on PAIRS (n pairs)``;
        an FMR of 0 is said to be below what the impostor pairs can measure (``1 / n``)."""
        fmr_measured, n_impostor, n_genuine = self.fmr_measured, self.n_impostor or 0, self.n_genuine or 0
        if fmr_measured is None or not n_impostor:
            return "FMR and FNMR not measured: run qualiface calibrate"
        false_matches = round(fmr_measured * n_impostor)
        if false_matches == 0:
            fmr = f"FMR < 1/{n_impostor:,} (no false match: too few impostor pairs to measure it)"
        else:
            fmr = f"FMR {fmr_measured:.3g} ({false_matches:,} of {n_impostor:,} impostor pairs)"
        fnmr = "FNMR not measured (no genuine pair)" if self.fnmr is None or not n_genuine else f"FNMR {self.fnmr:.3g}"
        return f"{fmr}, {fnmr} on {self.pairs or 'the calibration pairs'} ({n_impostor + n_genuine:,} pairs)"


def check_threshold(value: Any, what: str) -> float:
    """``value`` as a float if it is a finite cosine threshold in [-1, 1]; else :class:`CardError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CardError(f"{what} {value!r}: expected a number")
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise CardError(f"{what} {value!r}: a cosine threshold must be finite and within [-1, 1]")
    return float(value)


#: The JSON types of the card's plain fields, checked when a card is read (``(types, words)``).
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a string"),
    "source_format": (str, "a string"),
    "architecture": ((str, type(None)), "a string or null"),
    "architecture_kwargs": (dict, "an object"),
    "weights_sha256": ((str, type(None)), "a string or null"),
    "provenance": (dict, "an object"),
    "licence": ((str, type(None)), "a string or null"),
}


@dataclass(frozen=True)
class ModelCard:
    """What a face model is (see the module docstring). Build one with the loaders; read it with
    ``model.card`` or ``qualiface info``."""

    name: str
    source_format: str
    embedding_dim: int
    preprocessing: Preprocessing
    architecture: str | None = None
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    quality: tuple[QualityInfo, ...] = ()
    thresholds: tuple[ThresholdInfo, ...] = ()
    weights_sha256: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    licence: str | None = None
    confidence: ConfidenceCurve | None = None
    quality_calibration: QualityCalibration | None = None
    version: str = CARD_FORMAT

    # -------------------------------------------------------------------------------------------- derived facts

    @property
    def quality_method(self) -> str | None:
        """The primary quality method, or ``None``."""
        return self.quality[0].method if self.quality else None

    @property
    def decision_threshold(self) -> ThresholdInfo | None:
        """The threshold decisions use by default: the newest given (``model.threshold = t``) or calibrated one,
        else ``None``. A learned threshold never decides by default (see :attr:`learned_threshold`)."""
        chosen = [t for t in self.thresholds if t.kind in ("given", "calibrated")]
        return chosen[-1] if chosen else None

    @property
    def learned_threshold(self) -> ThresholdInfo | None:
        """The threshold learned in training (UniTSFace's ``b / γ``), or ``None``; it decides only when asked
        for (``--threshold learned``)."""
        learned = [t for t in self.thresholds if t.kind == "learned"]
        return learned[-1] if learned else None

    def with_threshold(self, threshold: ThresholdInfo) -> ModelCard:
        """A copy with ``threshold`` added (a calibration replaces earlier calibrations, a given threshold earlier
        given ones)."""
        kept = tuple(t for t in self.thresholds if t.kind != threshold.kind or t.kind == "learned")
        return replace(self, thresholds=(*kept, threshold))

    def stamp(self) -> dict[str, Any]:
        """What every output carries about the model that made it: name, format, SHA-256, preprocessing."""
        return {
            "model": self.name,
            "model_format": self.source_format,
            "model_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing.describe(),
        }

    # -------------------------------------------------------------------------------------------- plain data

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preprocessing"] = self.preprocessing.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "model card") -> ModelCard:
        """Read and validate a card; :class:`CardError` names ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise CardError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != CARD_FORMAT:
            raise CardError(f"{where}: card version {version!r} is not {CARD_FORMAT!r}; upgrade qualiface to read it")
        try:
            preprocessing = preprocessing_from_dict(dict(data.get("preprocessing") or {}))
            quality = tuple(_quality_info(q) for q in data.get("quality") or ())
            thresholds = tuple(ThresholdInfo(**t) for t in data.get("thresholds") or ())
            confidence = None if data.get("confidence") is None else ConfidenceCurve.from_dict(data["confidence"])
            calibrated = data.get("quality_calibration")
            quality_calibration = None if calibrated is None else QualityCalibration.from_dict(calibrated)
            structured = {"preprocessing", "quality", "thresholds", "confidence", "quality_calibration"}
            known = {f.name for f in fields(cls)} - structured
            unknown = sorted(set(data) - known - structured)
            if unknown:
                raise CardError(f"unknown fields {unknown}")
            rest = {k: data[k] for k in known if k in data}
            for key, value in rest.items():
                expected = _FIELD_TYPES.get(key)
                if expected is not None and not isinstance(value, expected[0]):
                    raise CardError(f"{key} must be {expected[1]}, got {type(value).__name__}")
            card = cls(
                preprocessing=preprocessing,
                quality=quality,
                thresholds=thresholds,
                confidence=confidence,
                quality_calibration=quality_calibration,
                **rest,
            )
        except CardError as exc:
            raise CardError(f"{where}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
            raise CardError(f"{where}: invalid card ({exc})") from None
        embedding_dim: object = card.embedding_dim  # as read: any JSON value
        if not isinstance(embedding_dim, int) or embedding_dim <= 0:
            raise CardError(f"{where}: embedding_dim {card.embedding_dim!r} is not a positive integer")
        return card

    @classmethod
    def from_json(cls, text: str, *, where: str = "model card") -> ModelCard:
        return cls.from_dict(parse_json(text, where), where=where)

    def summary(self) -> str:
        """Several lines for people (``qualiface info``)."""
        lines = [
            f"name            {self.name}",
            f"format          {self.source_format}",
            f"architecture    {self.architecture or 'unknown'}"
            + (f" {json.dumps(self.architecture_kwargs, sort_keys=True)}" if self.architecture_kwargs else ""),
            f"embedding       {self.embedding_dim}-d, raw (compare with cosine)",
            f"preprocessing   {self.preprocessing.describe()} (source: {self.preprocessing.source})",
        ]
        if self.quality:
            for q in self.quality:
                span = f", observed {q.observed_range[0]:.4g}..{q.observed_range[1]:.4g}" if q.observed_range else ""
                lines.append(f"quality         {q.label}: {q.description or q.source}, higher is better{span}")
        else:
            lines.append("quality         none")
        if self.quality_calibration is not None:
            lines.extend(self.quality_calibration.lines())
        else:
            lines.append("quality scale   unavailable (qualiface calibrate measures it)")
        if self.thresholds:
            decision = self.decision_threshold
            for t in self.thresholds:
                mark = " (decides)" if t is decision else ""
                if t.kind == "learned":
                    mark = " (decides only with --threshold learned)"
                lines.append(f"threshold       {t.describe()}{mark}")
                if t.kind == "learned":
                    lines.append(f"                learned threshold {t.value:.3f}: {t.rates()}")
            if decision is None:
                lines.append("threshold       none decides by default (qualiface calibrate stores one)")
        else:
            lines.append("threshold       none (qualiface calibrate stores one)")
        if self.confidence is not None:
            lines.append(f"confidence      {self.confidence.describe()}")
        else:
            lines.append("confidence      unavailable (qualiface calibrate fits it)")
        lines.append(f"weights sha256  {self.weights_sha256 or 'unknown'}")
        for key, value in sorted(self.provenance.items()):
            lines.append(f"provenance      {key}: {value}")
        lines.append(f"licence         {self.licence or 'not stated'}")
        return "\n".join(lines)


def _quality_info(q: Any) -> QualityInfo:
    if not isinstance(q, Mapping):
        raise CardError(f"quality: expected a JSON object, got {type(q).__name__}")
    return QualityInfo(**{**q, "observed_range": tuple(q["observed_range"]) if q.get("observed_range") else None})


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (for a directory: of its ``model.pt``)."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
