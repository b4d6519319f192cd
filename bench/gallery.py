"""Gallery search latency against gallery size: exact (NumPy, :func:`qualiface.gallery.top_k`) and FAISS.

Usage::

    python bench/gallery.py                               # 10^3 .. 10^6 templates x 512, top-5
    python bench/gallery.py --sizes 1000 100000 --repeat 3 --hnsw-max 100000

Templates are random unit float32 vectors (the search does not depend on their values). Per size: the latency of
one probe (best of ``--repeat``) and the per-probe time of a batch of ``--batch`` probes, for ``exact``,
``faiss`` (IndexFlatIP, exact) and ``faiss-hnsw`` (approximate, built only up to ``--hnsw-max`` templates: build
time, recall@k of random probes against exact, and the share of mated probes, a template plus noise at cosine
about 0.7 as a genuine pair, whose mate comes first). The **memory-bandwidth floor** of a search is the time to read the
templates once: measured as the best time of ``np.max`` or ``np.sum`` over the same array (pure reads, one
thread; a copy is reported too), and the goal is an exact top-5 over 10^6 x 512 within 2x that floor. Results: a
Markdown table on stdout and ``bench/results/gallery_<date>.json`` (command, date, CPU, rows).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _measure import best_of, cpu_model


def unit_templates(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(n, dim)`` random unit float32 rows (uniform in the cube, normalised), generated in blocks."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        block = rng.random((min(65536, n - start), dim), dtype=np.float32) - 0.5
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + block.shape[0]] = block
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="probes searched together for the per-probe figure")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest gallery given an HNSW index")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from qualiface.gallery import FaissIndex, top_k

    try:
        import faiss
    except ImportError:
        faiss = None
    rows: list[dict[str, Any]] = []
    probes = unit_templates(args.batch, args.dim, seed=1)
    for size in args.sizes:
        templates = unit_templates(size, args.dim)
        gib = templates.nbytes / 2**30
        # the floor: the fastest pure read of the array (np.max and np.sum, one thread each)
        floor = min(
            best_of(lambda t=templates: np.max(t), args.repeat),
            best_of(lambda t=templates: np.sum(t, dtype=np.float32), args.repeat),
        )
        scratch = np.empty_like(templates)
        copy = best_of(lambda t=templates, s=scratch: np.copyto(s, t), args.repeat)
        del scratch
        exact_one = best_of(lambda t=templates: top_k(probes[:1], t, args.k), args.repeat)
        exact_batch = best_of(lambda t=templates: top_k(probes, t, args.k), max(1, args.repeat // 2)) / args.batch
        row: dict[str, Any] = {
            "templates": size,
            "dim": args.dim,
            "gib": round(gib, 3),
            "read_floor_ms": floor * 1e3,
            "read_gib_per_s": gib / floor,
            "copy_ms": copy * 1e3,
            "exact_1_ms": exact_one * 1e3,
            "exact_1_over_floor": exact_one / floor,
            "exact_batch_ms_per_probe": exact_batch * 1e3,
        }
        reference = top_k(probes, templates, args.k)[1]
        if faiss is not None:
            flat = FaissIndex(templates, "faiss")
            row["faiss_1_ms"] = best_of(lambda f=flat: f.search(probes[:1], args.k), args.repeat) * 1e3
            row["faiss_batch_ms_per_probe"] = (
                best_of(lambda f=flat: f.search(probes, args.k), max(1, args.repeat // 2)) * 1e3 / args.batch
            )
            del flat
            if size <= args.hnsw_max:
                start = time.perf_counter()
                hnsw = FaissIndex(templates, "faiss-hnsw")
                row["hnsw_build_s"] = time.perf_counter() - start
                row["hnsw_1_ms"] = best_of(lambda h=hnsw: h.search(probes[:1], args.k), args.repeat) * 1e3
                found = hnsw.search(probes, args.k)[1]
                row["hnsw_recall_at_k"] = float(
                    np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, reference, strict=True)])
                )
                # mated probes: a template plus noise (cosine about 0.7 to it, as a genuine pair), found first?
                rng = np.random.default_rng(2)
                mates = rng.choice(size, args.batch, replace=False)
                noisy = templates[mates] + rng.standard_normal((args.batch, args.dim), dtype=np.float32) / np.sqrt(
                    args.dim, dtype=np.float32
                )
                noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
                row["hnsw_mate_first"] = float(np.mean(hnsw.search(noisy, args.k)[1][:, 0] == mates))
                row["exact_mate_first"] = float(np.mean(top_k(noisy, templates, args.k)[1][:, 0] == mates))
                del hnsw
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del templates

    header = (
        "| templates x dim | GiB | read floor ms (GiB/s) | exact 1 probe ms | / floor | exact ms/probe "
        f"(batch {args.batch}) | FAISS flat 1 probe ms | FAISS flat ms/probe | HNSW build s | HNSW 1 probe ms | "
        f"HNSW recall@{args.k} (random probes) | HNSW mate first (exact) |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    for r in rows:
        print(
            f"| {r['templates']:,} x {r['dim']} | {r['gib']:.3f} | {r['read_floor_ms']:.2f} "
            f"({r['read_gib_per_s']:.1f}) | {r['exact_1_ms']:.2f} | {r['exact_1_over_floor']:.2f} | "
            f"{r['exact_batch_ms_per_probe']:.3f} | {cell(r, 'faiss_1_ms', '.2f')} | "
            f"{cell(r, 'faiss_batch_ms_per_probe', '.3f')} | {cell(r, 'hnsw_build_s', '.1f')} | "
            f"{cell(r, 'hnsw_1_ms', '.3f')} | {cell(r, 'hnsw_recall_at_k', '.3f')} | "
            f"{cell(r, 'hnsw_mate_first', '.3f')} ({cell(r, 'exact_mate_first', '.3f')}) |"
        )
    record = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", None),
        "rows": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"gallery_{datetime.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
