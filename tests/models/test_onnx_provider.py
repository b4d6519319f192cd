"""Which onnxruntime execution provider runs an ONNX model: logged, kept in ``FaceModel.info["providers"]``, and a
request for CUDA that onnxruntime does not serve is a warning (the CPU half of tests/gpu/test_onnx_cuda.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

from _helpers.tiny_backbone import TinyCNN
from qualiface.models import export_onnx, load_model
from qualiface.models.formats.onnx_file import report_providers

LOGGER = "qualiface.models.formats.onnx_file"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(TinyCNN().eval(), path)
    return path


def test_a_cpu_load_runs_on_the_cpu_provider_and_says_so(onnx_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = load_model(onnx_path)
    assert model.info["providers"] == ["CPUExecutionProvider"]
    assert model.session.get_providers()[0] == "CPUExecutionProvider"
    assert f"{onnx_path.name}: onnxruntime runs it on CPUExecutionProvider" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime serves CUDA (tests/gpu)"
)
def test_cuda_asked_of_a_cpu_onnxruntime_warns_and_names_what_runs(
    onnx_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        model = load_model(onnx_path, device="cuda")  # onnxruntime's own warning: the provider is not available
    assert model.info["providers"][0] == "CPUExecutionProvider"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "asked for onnxruntime's CUDAExecutionProvider but the model runs on CPUExecutionProvider" in warnings[0]
    assert ", ".join(ort.get_available_providers()) in warnings[0]


class _Session:
    def __init__(self, providers: list[str]) -> None:
        self.providers = providers

    def get_providers(self) -> list[str]:
        return self.providers


@pytest.mark.parametrize(
    ("asked", "running", "warns"),
    [
        (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"], False),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], True),
        (["CPUExecutionProvider"], ["CPUExecutionProvider"], False),
    ],
)
def test_report_providers_warns_only_when_cuda_was_asked_and_not_taken(
    caplog: pytest.LogCaptureFixture, asked: list[str], running: list[str], warns: bool
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        got = report_providers(
            _Session(running), asked, Path("m.onnx"), ["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    assert got == running
    assert f"m.onnx: onnxruntime runs it on {running[0]}" in caplog.messages
    assert any(r.levelno == logging.WARNING for r in caplog.records) is warns
