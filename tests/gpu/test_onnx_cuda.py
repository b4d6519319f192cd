"""An exported model on the GPU: onnxruntime's CUDA provider and the PyTorch inference path on CUDA give the
embeddings (and the quality output) that PyTorch computes on the CPU, and the provider that ran is the CUDA one.

Tolerances: onnxruntime's CUDA provider runs float32 convolutions in TF32 on Ampere and later GPUs by default (its
``use_tf32`` option; inputs rounded to 10 mantissa bits, 2^-11 ≈ 4.9e-4), through the 8 convolutions of an
iresnet18 at 16x16: embeddings within ``1e-2·max|embedding|`` of the CPU and a cosine of at least 0.9999 per image
(a TF32 error of ~1e-3 moves the cosine by ~1e-6). PyTorch on CUDA with TF32 off differs from the CPU only by the
order of its sums: ``1e-4`` relative.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from _helpers import official_checkpoints as oc
from qualiface.backbones.base import Backbone
from qualiface.models import FaceModel, export_onnx, load_model

pytestmark = pytest.mark.gpu

CUDA_PROVIDER = "CUDAExecutionProvider"
SIDE = 16


def _torch_cpu(backbone: Backbone, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        emb, aux = backbone.forward_aux(torch.from_numpy(x))
    return emb.numpy(), next(iter(aux.values())).float().numpy()


def _assert_embeddings_close(got: np.ndarray, want: np.ndarray, rtol: float, min_cosine: float) -> None:
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol:g} x max |embedding| {scale:.3g}"
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= min_cosine, f"cosine to the CPU embedding {cosine.min():.8f} < {min_cosine}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Backbone, Path]:
    """An iresnet18 with a CR-FIQA branch (outputs ``embedding`` and ``quality``), exported by ``export_onnx``."""
    backbone = oc.make_backbone("iresnet18", SIDE, quality_branch="cr_fiqa")
    path = tmp_path_factory.mktemp("onnx") / "iresnet18_crfiqa.onnx"
    export_onnx(backbone, path)
    return backbone, path


def test_onnxruntime_cuda_provider_equals_torch_on_the_cpu(
    exported: tuple[Backbone, Path], caplog: pytest.LogCaptureFixture, record_property: Callable[[str, object], None]
) -> None:
    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        pytest.skip(f"onnxruntime {ort.__version__} has no {CUDA_PROVIDER} (available: {', '.join(available)})")
    backbone, path = exported
    with caplog.at_level(logging.INFO, logger="qualiface.models.formats.onnx_file"):
        model = load_model(path, device="cuda")
    ran = model.session.get_providers()
    record_property("onnx_providers", ",".join(ran))  # in the JUnit XML that bench/gpu.sh writes
    assert ran[0] == CUDA_PROVIDER, f"onnxruntime lists {CUDA_PROVIDER} but the session runs on {ran}"
    assert model.info["providers"] == ran
    assert f"{path.name}: onnxruntime runs it on {CUDA_PROVIDER}" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    x = np.random.default_rng(0).standard_normal((5, 3, SIDE, SIDE)).astype(np.float32)
    want, want_q = _torch_cpu(backbone, x)
    got, got_q = model.forward_array(x)
    _assert_embeddings_close(got, want, rtol=1e-2, min_cosine=0.9999)
    assert got_q is not None
    np.testing.assert_allclose(got_q, want_q, rtol=1e-2, atol=1e-2 * float(np.abs(want_q).max()))


def test_torch_inference_on_cuda_equals_the_cpu(exported: tuple[Backbone, Path], ieee_fp32: None) -> None:
    backbone, _ = exported
    x = np.random.default_rng(1).standard_normal((5, 3, SIDE, SIDE)).astype(np.float32)
    want, want_q = _torch_cpu(backbone, x)
    model = FaceModel.from_backbone(backbone, device="cuda")
    try:
        assert next(model.module.parameters()).is_cuda
        with model.inference():
            got, got_q = model.forward_array(x)
    finally:
        backbone.to("cpu")  # the module fixture's backbone is shared
    _assert_embeddings_close(got, want, rtol=1e-4, min_cosine=1 - 1e-7)
    assert got_q is not None
    np.testing.assert_allclose(got_q, want_q, rtol=1e-4, atol=1e-4 * float(np.abs(want_q).max()))
