"""How faces are found in photos: one options record shared by every photo command, the API and the server.

:class:`DetectorOptions` holds the detector's score threshold, NMS IoU, the smallest face kept, the largest image
side given to the detector, and what is tried when a photo gives no face (``retry``). It is parsed from the one
command-line spelling ``--detector key=value,...`` (:meth:`DetectorOptions.parse`) and builds the detector
(:meth:`DetectorOptions.create`); :func:`qualiface.detect.find.find_faces` applies the rest (the steps, and why
they are the defaults, are in its module docstring and in docs/photos.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from qualiface.errors import InputError

__all__ = ["DETECTOR_HELP", "RETRY_STEPS", "DetectorOptions", "DetectorOptionsError"]

#: What :func:`qualiface.detect.faces.align_image` may try, in this order, when a photo gives no face.
RETRY_STEPS = ("pad", "upscale")

DETECTOR_HELP = (
    "comma-separated key=value: score=0.6 (detector score threshold), nms=0.3 (NMS IoU), min_size=0 (drop faces "
    "whose box's shorter side is below this many pixels), max_side=0 (photos with a longer side are shrunk to it "
    "for detection, the crop is still cut from the full photo; 0 = no limit), retry=pad+upscale (when a photo gives "
    "no face: pad it with a black border, then look at it 2x in tiles; 'none' turns retries off)"
)


#: The short keys of ``--detector`` and the fields they set.
_KEYS = {"score": "score_threshold", "nms": "nms_threshold", "min_size": "min_size", "max_side": "max_side"}


class DetectorOptionsError(InputError):
    """A bad ``--detector`` value; the message names the key and the value."""


@dataclass(frozen=True)
class DetectorOptions:
    """Detector settings (see the module docstring and ``docs/photos.md``).

    Attributes:
        score_threshold: minimum detector score in ``[0, 1]``.
        nms_threshold: IoU above which an overlapping lower-scoring box is suppressed, in ``[0, 1]``.
        min_size: faces whose box's shorter side is below this many image pixels are dropped (0 keeps all).
        max_side: photos whose longer side exceeds this are downscaled for detection (0: no limit of ours).
        retry: steps tried in order when a photo gives no face (a subset of :data:`RETRY_STEPS`): ``"pad"`` (the
            photo in a black canvas three times its size: tight crops) and ``"upscale"`` (the photo looked at 2x in
            overlapping tiles: faces too small for the photo's scale). The first step that finds a face wins;
            :attr:`qualiface.detect.faces.FaceSet.retried` names it per file.
    """

    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    min_size: float = 0.0
    max_side: int = 0
    retry: tuple[str, ...] = field(default=RETRY_STEPS)

    def __post_init__(self) -> None:
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise DetectorOptionsError(f"detector {name} must be a number in [0, 1], got {value!r}")
        min_size: object = self.min_size  # whatever the caller passed
        if not (isinstance(min_size, int | float) and math.isfinite(min_size) and min_size >= 0):
            raise DetectorOptionsError(f"detector min_size must be >= 0 pixels, got {self.min_size!r}")
        max_side: object = self.max_side
        if not isinstance(max_side, int) or max_side < 0 or 0 < max_side < 32:
            raise DetectorOptionsError(f"detector max_side must be 0 or an integer >= 32, got {self.max_side!r}")
        retry: object = self.retry
        if isinstance(retry, str):  # "pad+upscale" as on the command line, or one step
            retry = () if retry.lower() == "none" else tuple(s.strip() for s in retry.split("+"))
        if not isinstance(retry, tuple | list) or not all(isinstance(step, str) for step in retry):
            raise DetectorOptionsError(f"detector retry must be steps among {'+'.join(RETRY_STEPS)}, got {retry!r}")
        object.__setattr__(self, "retry", tuple(dict.fromkeys(retry)))  # a tuple, each step once, in order
        unknown = [step for step in self.retry if step not in RETRY_STEPS]
        if unknown:
            raise DetectorOptionsError(
                f"detector retry {'+'.join(unknown)!r} is unknown; use {'+'.join(RETRY_STEPS)}, a part of it or none"
            )

    @classmethod
    def parse(cls, spec: str | None, base: DetectorOptions | None = None) -> DetectorOptions:
        """Options from ``key=value,...`` (keys ``score``, ``nms``, ``min_size``, ``max_side``, ``retry``; the
        full field names are accepted too), on top of ``base`` (default: the defaults)."""
        options = base if base is not None else cls()
        if spec is None or not spec.strip():
            return options
        changes: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for part in spec.split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            key = key.replace("-", "_")
            if not sep or not value:
                raise DetectorOptionsError(f"--detector {part.strip()!r}: expected key=value ({DETECTOR_HELP})")
            name = _KEYS.get(key, key)
            if name not in names:
                raise DetectorOptionsError(
                    f"--detector: unknown key {key!r}; keys are score, nms, min_size, max_side, retry"
                )
            if name == "retry":
                changes[name] = value  # checked and split by __post_init__
                continue
            try:
                number = float(value)
            except ValueError:
                raise DetectorOptionsError(f"--detector {key}={value!r}: not a number") from None
            if name == "max_side":
                if number != int(number) if math.isfinite(number) else True:
                    raise DetectorOptionsError(f"--detector max_side={value!r}: not a whole number of pixels")
                changes[name] = int(number)
            else:
                changes[name] = number
        try:
            return replace(options, **changes)
        except DetectorOptionsError as exc:
            raise DetectorOptionsError(f"--detector {spec.strip()!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (written into outputs next to the model stamp)."""
        record = asdict(self)
        record["retry"] = list(self.retry)
        return record

    def describe(self) -> dict[str, Any]:
        """The detector these options build and its settings, as results report them (``verify --json``,
        the server's ``/verify``)."""
        return {"name": "yunet", **self.to_dict()}

    def create(self) -> Any:
        """The detector these options describe (the shipped YuNet)."""
        from qualiface.detect.yunet import YuNetDetector

        return YuNetDetector(score_threshold=self.score_threshold, nms_threshold=self.nms_threshold)
