"""Mixed precision: which autocast dtype a device runs fast, and the GradScaler for fp16.

Only the backbone runs under autocast; the heads turn it off and compute in float32.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU executes bf16 matrix products natively (AMX or AVX512-BF16)."""
    cpu = getattr(torch._C, "_cpu", None)
    if cpu is None:
        return False
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = float32).

    ``auto``: bf16 on CUDA devices that support it (else fp16), bf16 on CPUs with AMX or AVX512-BF16, else fp32.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            logger.warning("train.precision bf16: this CPU has no AMX/AVX512-BF16; bf16 runs slower than fp32 here")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("train.precision fp16 needs CUDA (it uses a GradScaler); use bf16 or fp32 on CPU")
        return torch.float16
    raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {precision!r}")


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (arcface_torch: growth interval 100), ``None`` otherwise."""
    if dtype is torch.float16:
        return torch.amp.GradScaler(device.type, growth_interval=100)
    return None
