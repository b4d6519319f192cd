"""Finding the faces of one photo under :class:`~qualiface.detect.options.DetectorOptions`: the first pass, the
retries when it finds none, the smallest face kept and the largest side given to the detector.

The detector sees a *view* of the photo (downscaled, padded or a zoomed tile); every point it returns is mapped
back to the ORIGINAL photo's pixels (pixel centres at integer coordinates on both sides of a resize, as in
:mod:`qualiface.detect.yunet`), so a crop is always cut from the full-resolution photo.

* **first pass**: the photo as it is, or shrunk so its longer side is ``max_side`` when it is longer (Pillow
  bilinear, antialiased).
* **pad** (retry): the photo centred in a black canvas three times its size (a border of one longer side on every
  side), so a tightly cropped face fills a third of the canvas instead of all of it. YuNet, like most detectors, is
  trained on faces that sit inside a scene: a face that fills the whole input is often scored below 0.6 or missed.
  Measured on tight crops (``bench/detect_tight_crops.py``, docs/photos.md): a black border of one side finds more
  than a mean-colour, edge-replicated or mirrored one, and more than a border of a half or a quarter side, with the
  same landmark accuracy. The canvas is at most :data:`PAD_CANVAS_MAX` pixels on its longer side (the photo is
  shrunk to fit), so the retry's memory is bounded whatever the photo's size.
* **upscale** (retry): the photo looked at twice as large, in 3 x 3 overlapping tiles (each half the photo's width
  and height, enlarged 2x; neighbours overlap by half a tile), the tiles' faces merged by NMS. It finds faces too
  small for the photo's scale (a far-away face in a large photo, which a fixed-input detector such as YuNet sees
  shrunk); it cannot help a tight crop, which is why it comes after ``pad``. Enlarging a small photo whole is not a
  step: YuNet letterboxes every photo to its 640-pixel input, so it would see the same picture.

The retries keep the user's score threshold (measured: padding alone finds the tight crops that a lower threshold
would, and a lower threshold on ordinary photos would add false faces). ``min_size`` applies to every step: a step
whose faces are all smaller goes on to the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from qualiface.detect.base import Detection, Detector
from qualiface.detect.options import DetectorOptions
from qualiface.detect.yunet import nms

__all__ = ["PAD_CANVAS_MAX", "PAD_RATIO", "FoundFaces", "Step", "find_faces"]

#: How a photo's faces were found: the first pass or the retry step that found them.
Step = Literal["first", "pad", "upscale"]
#: Border added on every side by the ``pad`` retry, as a fraction of the photo's longer side.
PAD_RATIO = 1.0
#: Longest side of the ``pad`` retry's canvas in pixels (the photo is shrunk to fit; YuNet's input is 640).
PAD_CANVAS_MAX = 2048
#: Zoom of the ``upscale`` retry, and its tiles per axis (overlapping by half a tile).
UPSCALE_ZOOM = 2
UPSCALE_TILES = 3


@dataclass(frozen=True)
class FoundFaces:
    """The faces of one photo, best score first, in original image pixels, and the step that found them
    (``None`` when no step found any)."""

    detections: list[Detection] = field(default_factory=list)
    step: Step | None = None


@dataclass(frozen=True)
class _View:
    """An image given to the detector and the map of its points to the original photo: ``x = ax * u + bx``."""

    image: np.ndarray
    ax: float
    bx: float
    ay: float
    by: float


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if (width, height) == (image.shape[1], image.shape[0]):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _scaled(image: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """``image`` resized by ``factor`` and the actual per-axis factors (rounded new size over old size)."""
    h, w = image.shape[:2]
    new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
    return _resize(image, new_w, new_h), new_w / w, new_h / h


def _first_view(image: np.ndarray, max_side: int) -> _View:
    """The photo, shrunk to ``max_side`` on its longer side when longer (``max_side=0``: as it is)."""
    h, w = image.shape[:2]
    if max_side and max(h, w) > max_side:
        small, rx, ry = _scaled(image, max_side / max(h, w))
        return _View(small, 1 / rx, 0.5 / rx - 0.5, 1 / ry, 0.5 / ry - 0.5)
    return _View(image, 1.0, 0.0, 1.0, 0.0)


def _pad_view(first: _View) -> _View:
    """The first view centred in a black canvas with a border of ``PAD_RATIO`` x its longer side."""
    image = first.image
    h, w = image.shape[:2]
    canvas_side = (1 + 2 * PAD_RATIO) * max(h, w)
    rx = ry = 1.0
    if canvas_side > PAD_CANVAS_MAX:
        image, rx, ry = _scaled(image, PAD_CANVAS_MAX / canvas_side)
        h, w = image.shape[:2]
    pad = round(PAD_RATIO * max(h, w))
    if rx != 1.0 or ry != 1.0:  # rounding must not take the canvas past its limit
        pad = min(pad, (PAD_CANVAS_MAX - max(h, w)) // 2)
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
    canvas[pad : pad + h, pad : pad + w] = image
    # canvas u -> scaled s = u - pad -> first view f = (s + 0.5) / r - 0.5 -> original a * f + b
    fx, gx = 1 / rx, (0.5 - pad) / rx - 0.5
    fy, gy = 1 / ry, (0.5 - pad) / ry - 0.5
    return _View(canvas, first.ax * fx, first.ax * gx + first.bx, first.ay * fy, first.ay * gy + first.by)


def _tile_views(first: _View) -> list[_View]:
    """Tiles of the first view, each ``1/UPSCALE_ZOOM`` of its width and height enlarged ``UPSCALE_ZOOM`` times."""
    image = first.image
    h, w = image.shape[:2]
    tile_w, tile_h = -(-w // UPSCALE_ZOOM), -(-h // UPSCALE_ZOOM)
    xs = np.linspace(0, w - tile_w, UPSCALE_TILES).round().astype(int)
    ys = np.linspace(0, h - tile_h, UPSCALE_TILES).round().astype(int)
    views = []
    for y0 in dict.fromkeys(int(v) for v in ys):
        for x0 in dict.fromkeys(int(v) for v in xs):
            tile, rx, ry = _scaled(image[y0 : y0 + tile_h, x0 : x0 + tile_w], UPSCALE_ZOOM)
            fx, gx = 1 / rx, 0.5 / rx - 0.5 + x0
            fy, gy = 1 / ry, 0.5 / ry - 0.5 + y0
            views.append(_View(tile, first.ax * fx, first.ax * gx + first.bx, first.ay * fy, first.ay * gy + first.by))
    return views


def _detect(detector: Detector, view: _View) -> list[Detection]:
    """The detector's faces in a view, mapped to original pixels (the detector's own objects for the photo itself)."""
    found = list(detector.detect(view.image))
    if (view.ax, view.bx, view.ay, view.by) == (1.0, 0.0, 1.0, 0.0):
        return found
    out = []
    for det in found:
        x1, y1, x2, y2 = det.box
        lmk = np.asarray(det.landmarks, dtype=np.float64)
        mapped = np.stack([lmk[:, 0] * view.ax + view.bx, lmk[:, 1] * view.ay + view.by], axis=1)
        box = (x1 * view.ax + view.bx, y1 * view.ay + view.by, x2 * view.ax + view.bx, y2 * view.ay + view.by)
        out.append(Detection(box=box, score=det.score, landmarks=mapped.astype(np.float32)))
    return out


def _merge_tiles(found: list[Detection], options: DetectorOptions) -> list[Detection]:
    """One detection per face from overlapping tiles: NMS at the options' IoU, then a face mostly (more than half
    of its box) inside a better-scoring kept one is dropped (a tile that cut the face through gives a part of it)."""
    if len(found) < 2:
        return found
    boxes = np.array([d.box for d in found], dtype=np.float64)
    scores = np.array([d.score for d in found], dtype=np.float64)
    kept: list[int] = []
    for i in nms(boxes, scores, options.nms_threshold):
        b = boxes[i]
        area = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
        inside = [
            max(min(b[2], boxes[k, 2]) - max(b[0], boxes[k, 0]), 0.0)
            * max(min(b[3], boxes[k, 3]) - max(b[1], boxes[k, 1]), 0.0)
            for k in kept
        ]
        if not any(v > 0.5 * area for v in inside):
            kept.append(int(i))
    return [found[i] for i in kept]


def _big_enough(found: list[Detection], min_size: float) -> list[Detection]:
    return [d for d in found if min(d.width, d.height) >= min_size]


def find_faces(image: np.ndarray, detector: Detector, options: DetectorOptions | None = None) -> FoundFaces:
    """The faces of one RGB ``uint8`` photo under ``options`` (see the module docstring), best score first.

    ``options.score_threshold`` and ``options.nms_threshold`` are the detector's own settings
    (:meth:`DetectorOptions.create` builds it with them); a detector passed in keeps its own. ``min_size``,
    ``max_side`` and ``retry`` apply to any detector. Exceptions of the detector propagate.
    """
    options = options if options is not None else DetectorOptions()
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {img.dtype} {img.shape}")
    first = _first_view(img, options.max_side)
    found = _big_enough(_detect(detector, first), options.min_size)
    if found:
        return FoundFaces(found, "first")
    for step in options.retry:
        if step == "pad":
            found = _detect(detector, _pad_view(first))
        elif step == "upscale":
            found = _merge_tiles([d for view in _tile_views(first) for d in _detect(detector, view)], options)
        found = _big_enough(found, options.min_size)
        if found:
            return FoundFaces(sorted(found, key=lambda d: -d.score), cast(Step, step))
    return FoundFaces([], None)
