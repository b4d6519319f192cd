"""Forward+backward time and peak memory of every margin head, against a bare linear + cross-entropy.

Usage::

    python bench/heads.py                       # B=128, D=512, C = 10k, 100k, 1M; writes bench/results/heads.json
    python bench/heads.py --classes 10000 --reps 3 --heads arcface cosface

Each configuration runs in its own subprocess so that its peak memory (``VmHWM`` minus the resident size
after importing torch) is its own. Rows:

- ``bare_linear_ce``: ``F.cross_entropy(F.linear(x, W), y)``, no normalisation, no margin: the floor.
- ``usual_arcface``: the common recipe, ``F.linear(F.normalize(x), F.normalize(W))``, clamp, ArcFace margin,
  cross-entropy, all through autograd (what most repositories do).
- ``pml_arcface`` / ``pml_cosface``: pytorch-metric-learning's ArcFaceLoss / CosFaceLoss, when installed.
- every registered qualiface head, in float32 and with ``matmul_dtype=bfloat16``, with all classes and with
  Partial FC sampling (``--sample-rate``, sparse class-centre gradient).

GFLOP/s counts the three GEMMs of a step (``6·B·C'·D``) and is given as a fraction of this machine's GEMM
peak measured by the same script (``torch.mm`` of 2048² matrices in float32 and bfloat16). The bfloat16 rows
run only where a bfloat16 GEMM is faster than a float32 one (AMX / AVX512-BF16 CPUs, GPUs).
``--malloc-tuned`` runs every configuration with glibc's ``MALLOC_MMAP_MAX_=0`` and a large
``MALLOC_TRIM_THRESHOLD_``, so that large buffers are reused instead of being mapped and page-faulted anew
at every step (it speeds up the bare baseline and the heads alike).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _measure import reset_peak, rss_kib


def gemm_peak(dtype_name: str, size: int = 2048, reps: int = 10) -> float:
    """Achieved GFLOP/s of ``torch.mm`` on square matrices (the best of ``reps``)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _build_step(spec: dict[str, Any]):
    import torch
    import torch.nn.functional as F

    import qualiface

    batch, dim, classes = spec["batch"], spec["dim"], spec["classes"]
    emb = torch.randn(batch, dim, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    kind = spec["kind"]
    if kind == "bare_linear_ce":
        weight = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)

        def step() -> None:
            F.cross_entropy(F.linear(emb, weight), labels).backward()

        return step, [emb, weight]
    if kind == "usual_arcface":
        weight = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)
        rows = torch.arange(batch)

        def step() -> None:
            cos = F.linear(F.normalize(emb), F.normalize(weight)).clamp(-1, 1)
            target = torch.cos(torch.acos(cos[rows, labels].clamp(-1 + 1e-7, 1 - 1e-7)) + 0.5)
            logits = 64.0 * cos.scatter(1, labels[:, None], target[:, None])
            F.cross_entropy(logits, labels).backward()

        return step, [emb, weight]
    if kind.startswith("pml_"):
        from pytorch_metric_learning import losses

        if kind == "pml_arcface":  # PML takes the margin in degrees
            loss_fn = losses.ArcFaceLoss(classes, dim, margin=28.6, scale=64)
        else:
            loss_fn = losses.CosFaceLoss(classes, dim, margin=0.35, scale=64)

        def step() -> None:
            loss_fn(emb, labels).backward()

        return step, [emb, *loss_fn.parameters()]
    head = qualiface.create_head(
        kind,
        dim,
        classes,
        sample_rate=spec["sample_rate"],
        sparse_grad=spec["sample_rate"] < 1.0,
        matmul_dtype=spec["matmul_dtype"],
        **spec.get("head_kwargs", {}),
    )
    aux_values = {"scale": torch.full((batch,), 64.0, requires_grad=True), "quality": torch.rand(batch)}
    aux = {name: aux_values[name] for name in head.requires}

    def step() -> None:
        head(emb, labels, **aux).loss.backward()

    return step, [emb, *head.parameters()]


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``spec`` in this process: two warm-up steps, then the median of at least ``reps`` steps and of
    as many as fit in ``min_seconds`` (at most 50)."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    baseline = rss_kib("VmRSS")
    step, params = _build_step(spec)
    times: list[float] = []
    reset_peak()
    warmup = 2
    while len(times) < 50 and (len(times) < spec["reps"] or sum(times) < spec["min_seconds"]):
        for p in params:
            p.grad = None
        start = time.perf_counter()
        step()
        if warmup:
            warmup -= 1
        else:
            times.append(time.perf_counter() - start)
    peak = rss_kib("VmHWM")
    return {"seconds": statistics.median(times), "steps": len(times), "peak_mib": (peak - baseline) / 1024}


def _specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per class count: the baselines (bare at C and at the sampled C'), then every head, full and sampled."""
    import qualiface

    heads = args.heads or qualiface.list_heads()
    base = {
        "batch": args.batch,
        "dim": args.dim,
        "threads": args.threads,
        "reps": args.reps,
        "min_seconds": args.min_seconds,
    }
    matmuls = (None, "bfloat16") if args.bf16 else (None,)
    specs = []
    for classes in args.classes:
        full = {**base, "classes": classes, "sample_rate": 1.0, "matmul_dtype": None}
        specs.append({**full, "kind": "bare_linear_ce"})
        sampled = int(args.sample_rate * classes)
        if args.sample_rate < 1.0 and sampled not in args.classes:
            specs.append({**full, "classes": sampled, "kind": "bare_linear_ce"})
        specs.append({**full, "kind": "usual_arcface"})
        if args.pml:
            specs += [{**full, "kind": "pml_arcface"}, {**full, "kind": "pml_cosface"}]
        for rate in (1.0, args.sample_rate) if args.sample_rate < 1.0 else (1.0,):
            for matmul in matmuls:
                specs += [{**full, "kind": name, "sample_rate": rate, "matmul_dtype": matmul} for name in heads]
                if rate < 1.0 and "unitsface" in heads:  # USS negatives restricted to the sampled classes
                    extra = {"uss_negatives": "sampled"}
                    specs.append({**full, "kind": "unitsface", "sample_rate": rate, "matmul_dtype": matmul,
                                  "head_kwargs": extra})  # fmt: skip
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--heads", nargs="*", default=None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.5, help="time each configuration at least this long")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-pml", dest="pml", action="store_false")
    parser.add_argument("--malloc-tuned", action="store_true", help="reuse large buffers (glibc settings)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "heads.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.pml:
        try:
            import pytorch_metric_learning  # noqa: F401
        except ImportError:
            args.pml = False
    import torch

    torch.set_num_threads(args.threads)
    peaks = {name: gemm_peak(name) for name in ("float32", "bfloat16")}
    print(f"GEMM peak ({args.threads} threads): fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f}")
    args.bf16 = peaks["bfloat16"] > peaks["float32"]
    if not args.bf16:
        print("bfloat16 GEMMs are slower than float32 here: bfloat16 rows skipped")
    env = dict(os.environ)
    if args.malloc_tuned:
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 36))
    rows: list[dict[str, Any]] = []
    bare: dict[int, float] = {}
    print("| C | sample rate | method | ms / step | vs bare | peak MiB | GFLOP/s | of GEMM peak |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in _specs(args):
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True, check=False, env=env
        )
        if proc.returncode != 0:
            print(f"FAILED {spec}: {proc.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        used = spec["classes"] if spec["sample_rate"] >= 1.0 else int(spec["sample_rate"] * spec["classes"])
        if spec["kind"] == "bare_linear_ce":
            bare[used] = result["seconds"]
        gflops = 6 * spec["batch"] * used * spec["dim"] / result["seconds"] / 1e9
        peak = peaks["bfloat16" if spec["matmul_dtype"] else "float32"]
        ratio = result["seconds"] / bare[used] if used in bare else float("nan")
        row = {**spec, **result, "gflops": gflops, "peak_fraction": gflops / peak, "vs_bare": ratio}
        rows.append(row)
        label = f"{spec['kind']}{' bf16' if spec['matmul_dtype'] else ''}"
        label += "".join(f" {k}={v}" for k, v in spec.get("head_kwargs", {}).items())
        print(
            f"| {spec['classes']:>9,} | {spec['sample_rate']:<4} | {label:<22} | {result['seconds'] * 1e3:9.1f} | "
            f"{ratio:5.2f} | {result['peak_mib']:7.0f} | {gflops:6.1f} | {100 * gflops / peak:4.1f}% |",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    args.out.write_text(json.dumps({"gemm_peak_gflops": peaks, "machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
