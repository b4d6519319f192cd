"""Raw photos made from the shared data: faces that need detection and alignment before a dataset can use them.

Glint360K-sample crops (aligned 112x112) are resized and pasted at a seeded random place into a larger canvas of a
random grey; ORL photos (grey 92x112, not aligned) are pasted into a 240x240 grey canvas. Each identity keeps its
folder name, so the folder tree is an identity folder (``<root>/<identity>/<photo>``). Used by
``tests/data/test_photo_dataset.py`` and ``tests/cli/test_align_command.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from _helpers.shared_data import GLINT, ORL, need


def glint_identities(count: int) -> list[str]:
    """The first ``count`` Glint360K-sample identities (sorted)."""
    need(GLINT)
    return sorted(p.name for p in (GLINT / "images").iterdir() if p.is_dir())[:count]


def glint_photo(source: Path, rng: np.random.Generator, canvas: tuple[int, int] = (320, 240)) -> Image.Image:
    """A Glint crop resized to 150-170 pixels and pasted at a random place into a ``canvas`` of a random grey."""
    side = int(rng.integers(150, 171))
    face = Image.open(source).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    grey = int(rng.integers(60, 200))
    photo = Image.new("RGB", canvas, (grey, grey, grey))
    photo.paste(face, (int(rng.integers(0, canvas[0] - side + 1)), int(rng.integers(0, canvas[1] - side + 1))))
    return photo


def orl_photo(source: Path) -> Image.Image:
    """An ORL photo (grey 92x112) in the middle of a 240x240 grey canvas."""
    photo = Image.new("L", (240, 240), 128)
    photo.paste(Image.open(source), (74, 64))
    return photo


def make_raw_photos(root: Path, *, glint: int = 3, orl: int = 1, per_identity: int = 3, seed: int = 0) -> list[Path]:
    """``glint`` Glint identities as JPEG photos and ``orl`` ORL identities (``s1``...) as PNG photos, each with
    ``per_identity`` photos, under ``root/<identity>/``; returns the photos in sorted order."""
    need(GLINT, ORL)
    rng = np.random.default_rng(seed)
    for identity in glint_identities(glint):
        (root / identity).mkdir(parents=True, exist_ok=True)
        sources = sorted((GLINT / "images" / identity).iterdir())[:per_identity]
        for j, source in enumerate(sources):
            glint_photo(source, rng).save(root / identity / f"{j}.jpg", quality=95)
    for k in range(1, orl + 1):
        (root / f"s{k}").mkdir(parents=True, exist_ok=True)
        for j in range(1, per_identity + 1):
            orl_photo(ORL / f"s{k}" / f"{j}.pgm").save(root / f"s{k}" / f"{j}.png")
    return sorted(p for p in root.rglob("*") if p.is_file())


def blank_photo(path: Path, size: tuple[int, int] = (200, 160)) -> Path:
    """A photo without a face (a flat colour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (30, 90, 200)).save(path)
    return path


def two_face_photo(path: Path, seed: int = 1) -> Path:
    """Two Glint faces of different identities side by side: a large one (right) and a smaller one (left)."""
    first, second = glint_identities(2)
    small = Image.open(sorted((GLINT / "images" / first).iterdir())[0]).convert("RGB").resize((120, 120))
    large = Image.open(sorted((GLINT / "images" / second).iterdir())[0]).convert("RGB").resize((190, 190))
    photo = Image.new("RGB", (420, 260), (120, 120, 120))
    photo.paste(small, (20, 60))
    photo.paste(large, (200, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path)
    return path
