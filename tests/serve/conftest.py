"""Fixtures of the server tests: a tiny real model (``tiny_cnn``, 16x16 input, random weights) behind a real
:class:`FaceService`, and a 112x112 "aligned crop" (random pixels: ``?aligned=1`` skips the detector)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from _helpers.tiny_backbone import TinyCNN
from qualiface.models import FaceModel
from qualiface.serve import FaceService


@pytest.fixture(scope="module")
def service() -> FaceService:
    backbone = TinyCNN(embedding_dim=8, input_size=16, quality_branch="cr_fiqa").eval()
    return FaceService(FaceModel.from_backbone(backbone, name="tiny"), max_pixels=1_000_000)


@pytest.fixture(scope="module")
def crop() -> bytes:
    """A 112x112 PNG, taken as an aligned face with ``?aligned=1``."""
    pixels = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()
