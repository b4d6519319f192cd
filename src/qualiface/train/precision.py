"""Mixed precision: which autocast dtype a device runs fast, and the GradScaler for fp16.

Only the backbone runs under autocast; the heads turn it off and compute in float32.

Whether a CPU runs bf16 fast is a question about its matrix units: AMX-BF16 (Sapphire Rapids and later) or
AVX512-BF16 (Cooper Lake, Zen 4 and later). It is asked of three probes in turn, so that a torch release that
moves its API does not silently turn bf16 off (torch 2.13 moved the ``torch._C._cpu`` probes to ``torch.cpu``):

1. ``torch.cpu.get_capabilities()`` (the public capability table of current torch);
2. ``torch.cpu._is_amx_tile_supported()`` / ``_is_avx512_bf16_supported()`` (and the same names under
   ``torch._C._cpu``, where older releases kept them);
3. the ``flags`` line of ``/proc/cpuinfo`` (Linux).

When none answers, :func:`cpu_bf16_support` says so (``probe="none"``) and ``auto`` logs a warning and uses fp32.
"""

from __future__ import annotations

import logging
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
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp16-cuda")


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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU executes bf16 matrix products natively (AMX-BF16 or AVX512-BF16)."""
    return cpu_bf16_support().fast


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
    if support.fast:
        return ResolvedPrecision(torch.bfloat16, f"{setting}: CPU has {support.describe()}")
    return ResolvedPrecision(None, f"{setting}: CPU has {support.describe()}; bf16 would be slower than fp32")


def resolve(precision: str, device: torch.device) -> ResolvedPrecision:
    """The autocast dtype for ``precision`` on ``device``, with the reason.

    ``auto``: bf16 on CUDA devices that support it (else fp16 with a GradScaler), bf16 on CPUs with bf16 matrix
    units (AMX-BF16 or AVX512-BF16), else fp32. ``fp16-cuda``: fp16 with a GradScaler on CUDA, as the official
    arcface_torch / MagFace runs (``fp16=True``), and ``auto`` elsewhere (fp16 without a matrix unit and a scaler
    on CPU is neither fast nor safe). ``fp16`` on CPU is refused.
    """
    if precision == "fp32":
        return ResolvedPrecision(None, "fp32: as configured")
    if precision == "auto":
        return _auto(device, "auto")
    if precision == "fp16-cuda":
        if device.type == "cuda":
            return ResolvedPrecision(torch.float16, "fp16-cuda: fp16 with a GradScaler on CUDA, as the official run")
        return _auto(device, "fp16-cuda off CUDA, as auto")
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            logger.warning("train.precision bf16: this CPU has no AMX/AVX512-BF16; bf16 runs slower than fp32 here")
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
