"""The one convention for the real test data: ``../shared/data`` beside the checkout (as CI lays it out).

Tests that need a file call :func:`need` (or use :func:`path` and ``need``): when the data is absent they skip
with a reason naming the missing path, never silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``<checkout>/../shared/data``.
SHARED_DATA = Path(__file__).absolute().parents[2].parent / "shared" / "data"
ORL = SHARED_DATA / "orl"
GLINT = SHARED_DATA / "glint360k-sample"
MODELS = SHARED_DATA / "models"
SFACE = MODELS / "face_recognition_sface_2021dec_fp32_dequantized.onnx"
YUNET = MODELS / "face_detection_yunet_2023mar_fp32_dequantized.onnx"
INSIGHTFACE_SMALL = SHARED_DATA / "insightface-small"
MTFL = SHARED_DATA / "mtfl-landmarks"


def need(*paths: Path) -> None:
    """Skip the calling test, with a reason, unless every path exists."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"shared test data not present: {path} (expected ../shared/data beside the checkout)")
