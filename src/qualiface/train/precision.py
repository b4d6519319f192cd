"""Mixed precision: which autocast dtype a device runs fast, and the GradScaler for fp16.

Only the backbone runs under autocast; the heads turn it off and compute in float32.

Whether a CPU runs bf16 fast is a question about its bf16 units: AMX-BF16 (Sapphire Rapids and later) always
is; AVX512-BF16 alone (Cooper Lake, Zen 4, a VM that hides AMX) is fast on some CPUs and slow on others, so there
a short matmul measurement decides (:func:`cpu_bf16_verdict`). The units are asked of three probes in turn, so
that a torch release that moves its API does not silently turn bf16 off (torch 2.13 moved the ``torch._C._cpu``
probes to ``torch.cpu``):

1. ``torch.cpu.get_capabilities()`` (the public capability table of current torch);
2. ``torch.cpu._is_amx_tile_supported()`` / ``_is_avx512_bf16_supported()`` (and the same names under
   ``torch._C._cpu``, where older releases kept them);
3. the ``flags`` line of ``/proc/cpuinfo`` (Linux).

When none answers, :func:`cpu_bf16_support` says so (``probe="none"``) and ``auto`` logs a warning and uses fp32.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: CPU features that execute bf16 matrix products natively, as torch's capability table and Linux name them.
BF16_MATRIX_UNITS = ("amx_bf16", "avx512_bf16")
#: The private per-feature probes of torch (``torch.cpu`` since 2.x, ``torch._C._cpu`` before), by feature.
_TORCH_FLAG_PROBES = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
CPUINFO = Path("/proc/cpuinfo")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp16-cuda", "fp32-cuda")


@dataclass(frozen=True)
class Bf16Support:
    """What the probes found about bf16 matrix units on this CPU.

    Attributes:
        units: the bf16 matrix units present (a subset of :data:`BF16_MATRIX_UNITS`), empty when none.
        probe: which probe answered: ``"torch.cpu.get_capabilities"``, ``"torch.cpu"``, ``"torch._C._cpu"``,
            ``"/proc/cpuinfo"``, or ``"none"`` when no probe exists on this installation.
    """

    units: tuple[str, ...]
    probe: str

    @property
    def fast(self) -> bool:
        """Whether bf16 matrix products run natively here."""
        return bool(self.units)

    def describe(self) -> str:
        """One line: ``"avx512_bf16 (torch.cpu.get_capabilities)"``, ``"no bf16 matrix unit (...)"``."""
        found = ", ".join(self.units) if self.units else "no bf16 matrix unit"
        return f"{found} ({self.probe})" if self.probe != "none" else "unknown: no CPU capability probe answered"


def _from_capabilities(module: object) -> tuple[str, ...] | None:
    get = getattr(module, "get_capabilities", None)
    if get is None:
        return None
    capabilities = get()
    if not isinstance(capabilities, Mapping) or not any(unit in capabilities for unit in BF16_MATRIX_UNITS):
        return None
    return tuple(unit for unit in BF16_MATRIX_UNITS if capabilities.get(unit))


def _from_flag_probes(module: object) -> tuple[str, ...] | None:
    probes: dict[str, Callable[[], bool]] = {}
    for unit, name in _TORCH_FLAG_PROBES.items():
        fn = getattr(module, name, None)
        if fn is not None:
            probes[unit] = fn
    if not probes:
        return None
    return tuple(unit for unit in BF16_MATRIX_UNITS if unit in probes and probes[unit]())


def _from_cpuinfo(path: Path) -> tuple[str, ...] | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return tuple(unit for unit in BF16_MATRIX_UNITS if unit in flags)
    return None


def cpu_bf16_support(cpuinfo: Path = CPUINFO) -> Bf16Support:
    """Ask the probes, in order, whether this CPU has bf16 matrix units (see the module docstring)."""
    torch_cpu = getattr(torch, "cpu", None)
    legacy = getattr(torch._C, "_cpu", None)
    attempts: list[tuple[str, Callable[[], tuple[str, ...] | None]]] = [
        ("torch.cpu.get_capabilities", lambda: _from_capabilities(torch_cpu)),
        ("torch.cpu", lambda: _from_flag_probes(torch_cpu)),
        ("torch._C._cpu", lambda: _from_flag_probes(legacy)),
        (str(cpuinfo), lambda: _from_cpuinfo(cpuinfo)),
    ]
    for name, attempt in attempts:
        units = attempt()
        if units is not None:
            return Bf16Support(units, name)
    return Bf16Support((), "none")


#: bf16 must beat fp32 by this factor on the matmul probe before ``auto`` trusts AVX512-BF16 without AMX (the two
#: machines measured so far sit far on either side: AMD EPYC 4.2x, an Intel Xeon without AMX 0.5x; BENCHMARKS.md).
BF16_SPEEDUP_NEEDED = 1.5


@functools.lru_cache(maxsize=1)
def measured_bf16_speedup(size: int = 1024, repeats: int = 3) -> float:
    """fp32 time / bf16 time of a ``size`` × ``size`` matrix product on this CPU (best of ``repeats`` after a
    warm-up, at the current thread count; about 0.2 s, measured once per process)."""
    generator = torch.Generator().manual_seed(0)
    a32 = torch.randn(size, size, generator=generator)
    b32 = torch.randn(size, size, generator=generator)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = a32.to(dtype), b32.to(dtype)
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        best[dtype] = max(min(times), 1e-9)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_bf16_verdict() -> tuple[bool, str]:
    """Whether bf16 is the faster precision on this CPU, and why.

    AMX-BF16: yes (bf16 tiles; iResNet-50 trains 3.2x faster than fp32 on Sapphire Rapids). AVX512-BF16 alone is
    no promise (oneDNN's bf16 kernels ran 4x fp32 on an AMD EPYC and 0.5x on an Intel Xeon whose AMX was hidden),
    so there :func:`measured_bf16_speedup` decides, against :data:`BF16_SPEEDUP_NEEDED`. No unit: no.
    """
    support = cpu_bf16_support()
    if "amx_bf16" in support.units:
        return True, f"CPU has {support.describe()}"
    if "avx512_bf16" in support.units:
        speedup = measured_bf16_speedup()
        fast = speedup >= BF16_SPEEDUP_NEEDED
        verdict = "faster" if fast else f"not {BF16_SPEEDUP_NEEDED:g}x faster"
        return fast, f"CPU has {support.describe()} without AMX; a bf16 matmul ran {speedup:.2f}x fp32 here, {verdict}"
    return False, f"CPU has {support.describe()}; bf16 would be slower than fp32"


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 is the faster precision on this CPU (see :func:`cpu_bf16_verdict`)."""
    return cpu_bf16_verdict()[0]


@dataclass(frozen=True)
class ResolvedPrecision:
    """What ``train.precision`` means on one device.

    Attributes:
        dtype: the backbone's autocast dtype, ``None`` for float32.
        reason: why, in words (printed by ``qualiface train``).
    """

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def _auto(device: torch.device, setting: str) -> ResolvedPrecision:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return ResolvedPrecision(torch.bfloat16, f"{setting}: this CUDA device runs bf16")
        return ResolvedPrecision(torch.float16, f"{setting}: this CUDA device has no bf16; fp16 with a GradScaler")
    support = cpu_bf16_support()
    if support.probe == "none":
        logger.warning(
            "train.precision %s: cannot tell whether this CPU has bf16 matrix units (no torch.cpu capability probe"
            " and no /proc/cpuinfo flags); using fp32, set train.precision: bf16 to override",
            setting,
        )
    fast, why = cpu_bf16_verdict()
    return ResolvedPrecision(torch.bfloat16 if fast else None, f"{setting}: {why}")


def resolve(precision: str, device: torch.device) -> ResolvedPrecision:
    """The autocast dtype for ``precision`` on ``device``, with the reason.

    ``auto``: bf16 on CUDA devices that support it (else fp16 with a GradScaler); on CPUs bf16 where
    :func:`cpu_bf16_verdict` finds it faster (AMX-BF16, or AVX512-BF16 that measures so), else fp32. The recipes'
    settings reproduce the official run's precision on CUDA and take ``auto`` elsewhere: ``fp16-cuda`` (fp16 with a
    GradScaler, as arcface_torch's ``fp16=True`` runs) and ``fp32-cuda`` (the official fp32 runs: MagFace,
    CR-FIQA); fp16 on a CPU is neither fast nor safe. ``fp16`` on CPU is refused.
    """
    if precision == "fp32":
        return ResolvedPrecision(None, "fp32: as configured")
    if precision == "auto":
        return _auto(device, "auto")
    if precision == "fp16-cuda":
        if device.type == "cuda":
            return ResolvedPrecision(torch.float16, "fp16-cuda: fp16 with a GradScaler on CUDA, as the official run")
        return _auto(device, "fp16-cuda off CUDA, as auto")
    if precision == "fp32-cuda":
        if device.type == "cuda":
            return ResolvedPrecision(None, "fp32-cuda: fp32 on CUDA, as the official run")
        return _auto(device, "fp32-cuda off CUDA, as auto")
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            logger.warning("train.precision bf16: %s", cpu_bf16_verdict()[1])
        return ResolvedPrecision(torch.bfloat16, "bf16: as configured")
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(
                "train.precision fp16 needs CUDA (it uses a GradScaler); use fp16-cuda, bf16 or fp32 on CPU"
            )
        return ResolvedPrecision(torch.float16, "fp16: as configured, with a GradScaler")
    raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = float32); see :func:`resolve`."""
    return resolve(precision, device).dtype


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (arcface_torch: growth interval 100), ``None`` otherwise."""
    if dtype is torch.float16:
        return torch.amp.GradScaler(device.type, growth_interval=100)
    return None
