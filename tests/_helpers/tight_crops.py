"""Tightly cropped, grey, variously lit faces from the shared data: the set that YuNet's first pass misses.

Glint360K-sample crops are ArcFace-aligned 112x112, so the face is where the template puts it: the tight crop is the
fixed box :data:`GLINT_BOX` (eyebrows to chin, cheek to cheek) and the true landmarks are the template's points
mapped into the crop. ORL photos (92x112, not aligned) are cut to the box of the face found in the whole photo,
shrunk to :data:`ORL_SHRINK` of its width and height around its centre. Each crop is then made grey, lit by one of
:data:`LIGHTS` in turn (``255 * scale * (v / 255) ** gamma``) and resized to a random width in ``[48, 200)`` pixels.
Used by ``tests/detect/test_find.py`` and ``bench/detect_tight_crops.py``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from _helpers.shared_data import GLINT, ORL
from qualiface.data.align import ARCFACE_TEMPLATE_112

#: The tight face box in an aligned 112x112 Glint crop: ``(x1, y1, x2, y2)``, end exclusive.
GLINT_BOX = (22, 22, 90, 112)
#: The ORL crop keeps this fraction of the detected box's width and height.
ORL_SHRINK = 0.85
#: Lighting conditions: name -> (scale, gamma).
LIGHTS = {"well-lit": (1.0, 1.0), "dim": (0.6, 1.0), "dark": (0.35, 1.6), "very dark": (0.2, 2.2)}


@dataclass(frozen=True)
class TightCrop:
    """One crop: the RGB (grey replicated) image, its lighting, its source and, for Glint, the true landmarks."""

    image: np.ndarray
    light: str
    source: str
    name: str
    landmarks: np.ndarray | None


def _lit(grey: np.ndarray, light: str) -> np.ndarray:
    scale, gamma = LIGHTS[light]
    return np.clip(255.0 * scale * (grey.astype(np.float64) / 255.0) ** gamma, 0, 255).astype(np.uint8)


def _finish(grey: np.ndarray, light: str, width: int) -> tuple[np.ndarray, float, float]:
    """Lit, resized to ``width`` (aspect kept) and made RGB; the per-axis scale factors."""
    h, w = grey.shape
    height = max(8, round(width * h / w))
    out = np.asarray(Image.fromarray(_lit(grey, light)).resize((width, height), Image.Resampling.BILINEAR))
    return np.repeat(out[:, :, None], 3, axis=2), width / w, height / h


def glint_crops(count: int, rng: np.random.Generator) -> list[TightCrop]:
    """``count`` tight crops of distinct Glint images (seeded)."""
    with (GLINT / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    x1, y1, x2, y2 = GLINT_BOX
    out = []
    for k, i in enumerate(rng.choice(len(rows), count, replace=False)):
        grey = np.asarray(Image.open(GLINT / rows[i]["path"]).convert("L"))[y1:y2, x1:x2]
        light = list(LIGHTS)[k % len(LIGHTS)]
        image, fx, fy = _finish(grey, light, int(rng.integers(48, 200)))
        truth = np.stack(
            [(ARCFACE_TEMPLATE_112[:, 0] - x1 + 0.5) * fx - 0.5, (ARCFACE_TEMPLATE_112[:, 1] - y1 + 0.5) * fy - 0.5],
            axis=1,
        )
        out.append(TightCrop(image, light, "glint", rows[i]["path"], truth))
    return out


def orl_crops(count: int, rng: np.random.Generator, detector) -> list[TightCrop]:
    """``count`` tight crops of ORL photos (seeded; every person in turn), cut around the face ``detector`` finds in
    the whole photo (photos where it finds none are passed over)."""
    out: list[TightCrop] = []
    people = [ORL / f"s{i}" for i in range(1, 41)]
    k = 0
    while len(out) < count:
        person = people[k % len(people)]
        path = person / f"{int(rng.integers(1, 11))}.pgm"
        k += 1
        grey = np.asarray(Image.open(path).convert("L"))
        found = detector.detect(np.repeat(grey[:, :, None], 3, axis=2))
        if not found:
            continue
        x1, y1, x2, y2 = max(found, key=lambda d: d.score).box
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * ORL_SHRINK, (y2 - y1) * ORL_SHRINK
        left, top = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
        right, bottom = min(grey.shape[1], round(cx + w / 2)), min(grey.shape[0], round(cy + h / 2))
        light = list(LIGHTS)[len(out) % len(LIGHTS)]
        image, _, _ = _finish(grey[top:bottom, left:right], light, int(rng.integers(48, 200)))
        out.append(TightCrop(image, light, "orl", str(path.relative_to(ORL)), None))
    return out


def write_crops(crops: list[TightCrop], folder: Path) -> list[Path]:
    """The crops as PNG files ``folder/<index>.png`` (lossless, so the files are the arrays)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, crop in enumerate(crops):
        paths.append(folder / f"{i:04d}.png")
        Image.fromarray(crop.image).save(paths[-1])
    return paths
