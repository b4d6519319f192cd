"""Measurement helpers shared by the benchmark scripts (``python bench/<script>.py`` puts this folder on the path)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The shared real data beside the repository (``../shared/data``) and the SFace recognizer in it.
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SFACE = SHARED / "models" / "face_recognition_sface_2021dec_fp32_dequantized.onnx"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the record of every benchmark."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rss_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Reset ``VmHWM`` to the current resident size (Linux ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def best_of(fn: Callable[[], Any], reps: int) -> float:
    """The fastest of ``reps`` timed calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
