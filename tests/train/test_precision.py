"""train.precision: the bf16 probes, what ``auto`` and ``fp16-cuda`` resolve to, and that the trainer says so."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from qualiface.train import precision
from qualiface.train.precision import BF16_MATRIX_UNITS, cpu_bf16_support, resolve

CPU = torch.device("cpu")


def _torch_probes() -> dict[str, bool]:
    """Which of torch's own probes exist in this installation."""
    cpu = getattr(torch, "cpu", None)
    legacy = getattr(torch._C, "_cpu", None)
    return {
        "torch.cpu.get_capabilities": hasattr(cpu, "get_capabilities"),
        "torch.cpu._is_avx512_bf16_supported": hasattr(cpu, "_is_avx512_bf16_supported"),
        "torch._C._cpu._is_avx512_bf16_supported": hasattr(legacy, "_is_avx512_bf16_supported"),
    }


def test_installed_torch_still_has_a_bf16_probe() -> None:
    """Fails the day a torch release moves every probe again (torch 2.13 moved them out of ``torch._C._cpu``,
    which turned ``auto`` into fp32 on every AMX machine without a word)."""
    probes = _torch_probes()
    assert any(probes.values()), f"no torch CPU capability probe left: {probes}"
    first = next(name for name, present in probes.items() if present).removesuffix("._is_avx512_bf16_supported")
    assert cpu_bf16_support().probe == first, cpu_bf16_support()  # the first probe present answers


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo to cross-check")
def test_torch_probe_agrees_with_the_cpu_flags() -> None:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = tuple(unit for unit in BF16_MATRIX_UNITS if unit in flags)
    assert cpu_bf16_support().units == expected


def _no_torch_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "cpu", types.SimpleNamespace())
    monkeypatch.setattr(torch._C, "_cpu", types.SimpleNamespace(), raising=False)


def test_falls_back_to_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_torch_probes(monkeypatch)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_tile amx_bf16 avx512_bf16\n\n")
    support = cpu_bf16_support(cpuinfo)
    assert support == precision.Bf16Support(("amx_bf16", "avx512_bf16"), str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert not cpu_bf16_support(cpuinfo).fast


def test_legacy_torch_probes_are_still_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "cpu", types.SimpleNamespace())
    legacy = types.SimpleNamespace(_is_amx_tile_supported=lambda: True, _is_avx512_bf16_supported=lambda: False)
    monkeypatch.setattr(torch._C, "_cpu", legacy, raising=False)
    assert cpu_bf16_support(Path("/nonexistent")) == precision.Bf16Support(("amx_bf16",), "torch._C._cpu")


def test_every_probe_missing_is_said_not_guessed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _no_torch_probes(monkeypatch)
    monkeypatch.setattr(precision, "CPUINFO", Path("/nonexistent/cpuinfo"))
    monkeypatch.setattr(precision.cpu_bf16_support, "__defaults__", (Path("/nonexistent/cpuinfo"),))
    support = cpu_bf16_support()
    assert support.probe == "none"
    assert not support.fast
    with caplog.at_level(logging.WARNING, logger="qualiface.train.precision"):
        resolved = resolve("auto", CPU)
    assert resolved.dtype is None
    assert "cannot tell whether this CPU has bf16 matrix units" in caplog.text


def _units(monkeypatch: pytest.MonkeyPatch, *units: str, speedup: float | None = None) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda *a: precision.Bf16Support(units, "test"))

    def measured() -> float:
        if speedup is None:
            raise AssertionError("no measurement expected here")
        return speedup

    monkeypatch.setattr(precision, "measured_bf16_speedup", measured)


@pytest.mark.parametrize(
    ("units", "speedup", "want"),
    [
        (("amx_bf16", "avx512_bf16"), None, torch.bfloat16),  # AMX: bf16, no measurement needed
        (("avx512_bf16",), 4.2, torch.bfloat16),  # AVX512-BF16 that runs bf16 fast (AMD EPYC: 4.2x)
        (("avx512_bf16",), 0.5, None),  # AVX512-BF16 that does not (an Intel Xeon without AMX: 0.5x)
        ((), None, None),
    ],
)
def test_auto_on_cpu_follows_the_units_and_the_measurement(
    monkeypatch: pytest.MonkeyPatch, units: tuple[str, ...], speedup: float | None, want: torch.dtype | None
) -> None:
    _units(monkeypatch, *units, speedup=speedup)
    for setting in ("auto", "fp16-cuda", "fp32-cuda"):
        resolved = resolve(setting, CPU)
        assert resolved.dtype == want
        assert (units[0] if units else "no bf16 matrix unit") in resolved.reason
        if speedup is not None:
            assert f"{speedup:.2f}x fp32" in resolved.reason


def test_the_matmul_measurement_is_a_positive_ratio() -> None:
    speedup = precision.measured_bf16_speedup.__wrapped__(size=64, repeats=1)
    assert np.isfinite(speedup)
    assert speedup > 0


def test_auto_and_fp16_cuda_on_a_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", cuda).dtype is torch.bfloat16
    assert resolve("fp16-cuda", cuda).dtype is torch.float16
    assert resolve("fp32-cuda", cuda).dtype is None  # the official fp32 runs stay fp32 on a GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", cuda).dtype is torch.float16
    assert precision.grad_scaler(torch.float16, CPU) is not None  # fp16 always comes with a scaler


def test_explicit_settings_and_errors() -> None:
    assert resolve("fp32", CPU).name == "fp32"
    assert resolve("bf16", CPU).name == "bf16"
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve("fp16", CPU)
    with pytest.raises(ValueError, match="got 'fp8'"):
        resolve("fp8", CPU)


def test_trainer_prints_the_resolved_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from qualiface.cli.app import app

    _units(monkeypatch, "amx_bf16")
    config = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
    result = CliRunner().invoke(
        app,
        [
            "train", str(config), "--out", str(tmp_path / "run"),
            "--set", "train.steps=1", "--set", "train.precision=auto", "--set", "eval.sets=[]",
            "--set", "data.num_workers=0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 1 steps in bf16 + channels_last" in result.output
    run = (tmp_path / "run" / "run.json").read_text()
    assert '"precision": "bf16 + channels_last"' in run
    assert "amx_bf16" in run


def test_no_test_module_leaks_a_fake_torch_cpu() -> None:
    assert isinstance(torch.cpu, types.ModuleType)
    assert "torch.cpu" in sys.modules
