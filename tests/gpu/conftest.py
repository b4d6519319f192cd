"""Fixtures of the CUDA checks: full float32 on the GPU for the comparisons with the CPU, and ``tiny_cnn``.

The tests of this folder are marked ``gpu``; ``tests/conftest.py`` skips them, with a reason, where CUDA is absent.
"""

from collections.abc import Iterator

import pytest
import torch

from _helpers.tiny_backbone import registered


@pytest.fixture
def ieee_fp32() -> Iterator[None]:
    """Float32 matrix products and convolutions in IEEE float32 on CUDA (no TF32) during the test.

    cuDNN convolutions run in TF32 by default on Ampere and later GPUs (inputs rounded to 10 mantissa bits), which
    no CPU does: a float32 comparison with the CPU at ~1e-5 needs them off. Only torch's current
    ``fp32_precision`` settings are used (mixing them with the legacy ``allow_tf32`` flags is an error in torch).
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv  # type: ignore[attr-defined]  # not in the stubs
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision = "ieee"
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


@pytest.fixture
def tiny_cnn() -> Iterator[None]:
    """The test backbone ``tiny_cnn`` is registered during the test."""
    with registered():
        yield
