"""EDC / ERC with pAUC on 1M synthetic pairs in each convention, next to plain re-implementations of the
reference code timed in the same run (so the ratio does not depend on the machine).

Usage::

    python bench/eval_edc.py            # prints a table; goal: under 150 ms per convention

Data: the synthetic quality set of tests/eval/test_edc.py (float64; qualities a, b and noise c are fractional
parts of 0.5 + i·(irrational step), pair quality min(a, b), mated similarity growing with it) extended to
N = 1,000,000 pairs (pair i mated iff i mod 5 == 0: 200k mated, 800k non-mated), and for the fixed threshold
also 1M mated comparisons (the input of ``dasec``'s FNM-EDC, threshold from the starting error 0.05). Rows:

- ``library <convention>``: :func:`qualiface.eval.edc.edc` with pAUC at 0.2 and 0.3, FMR 1e-3 and 1e-4
  (fixed threshold) or 1e-2/1e-3/1e-4 (CR-FIQA) / 1e-3 (MagFace); best of 5, peak from ``tracemalloc``.
- ``reference dasec``: ``dasec/quality-assessment-evaluation: edc.py`` as written: list of sample-pair dicts, a
  Python loop to build the arrays, ``argsort``, reverse cumulative sum, stepwise pAUC loop (split into input
  building and computation).
- ``reference crfiqa``: ``fdbtrs/CR-FIQA: ERC/erc.py`` ``getFNMRFixedTH`` + ``ERC/roc.py`` per discard level
  (``calculate_roc`` with a stable NumPy sort in place of Python's ``sorted`` over tuples, which is the same
  order and several times faster; the FNMR list comprehensions as written).
- ``reference magface``: ``IrvingMeng/MagFace: eval/eval_quality/eval_quality.py`` per discard level as written.

Every reference row states the largest absolute difference between its curve and the library's.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from qualiface.eval.edc import edc

N = 1_000_000
LIMITS = (0.2, 0.3)


def synthetic(n: int, all_mated: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic quality data set for i = 0 … n-1 (every pair mated if ``all_mated``)."""
    i = np.arange(n, dtype=np.float64)
    a = np.modf(0.5 + i * 0.6180339887498949)[0]
    b = np.modf(0.5 + i * 0.7548776662466927)[0]
    c = np.modf(0.5 + i * 0.5698402909980532)[0]
    q = np.minimum(a, b)
    mated = np.ones(n, dtype=bool) if all_mated else np.arange(n) % 5 == 0
    s = np.where(mated, 0.15 + 0.6 * q + 0.4 * (c - 0.5), 0.05 + 0.5 * (c - 0.5) * (0.3 + 0.7 * (1 - q)))
    return a, b, s, mated.astype(np.int64)


def best_of(fn: Callable[[], Any], repeats: int = 5) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


# ------------------------------------------------------------------------------ reference re-implementations


def dasec_build_input(qa: np.ndarray, qb: np.ndarray, s: np.ndarray) -> list[dict[str, Any]]:
    """``example.py``: one ``EdcSamplePair`` dict per comparison."""
    return [
        {"samples": ({"quality_score": float(x)}, {"quality_score": float(y)}), "similarity_score": float(z)}
        for x, y, z in zip(qa, qb, s, strict=True)
    ]


def dasec_compute(sample_pairs: list[dict[str, Any]], starting_error: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """``compute_edc`` (FNMR, starting error) + ``compute_edc_pauc`` - ``compute_edc_area_under_theoretical_best``."""
    similarity = np.zeros(len(sample_pairs), dtype=np.float64)
    quality = np.zeros(len(sample_pairs), dtype=np.float64)
    for i, pair in enumerate(sample_pairs):
        similarity[i] = pair["similarity_score"]
        first, second = pair["samples"]
        quality[i] = min(first["quality_score"], second["quality_score"])
    order = np.argsort(quality)
    quality, similarity = quality[order], similarity[order]
    threshold = np.quantile(similarity, starting_error)
    n = len(quality)
    error_counts = np.zeros(n, dtype=np.uint32)
    np.less(similarity, threshold, out=error_counts)
    error_counts = np.flipud(np.cumsum(np.flipud(error_counts), out=error_counts))
    discard_counts = np.concatenate(([0], np.where(quality[:-1] != quality[1:])[0] + 1))
    error_fractions = error_counts[discard_counts] / (n - discard_counts)
    discard_fractions = discard_counts / n
    if discard_fractions[-1] != 1:
        discard_fractions = np.concatenate((discard_fractions, [1]))
        error_fractions = np.concatenate((error_fractions, [0]))
    paucs = {}
    for limit in LIMITS:
        pauc = 0.0
        for i in range(len(discard_fractions)):
            if i == len(discard_fractions) - 1 or discard_fractions[i + 1] >= limit:
                pauc += error_fractions[i] * (limit - discard_fractions[i])
                break
            pauc += error_fractions[i] * (discard_fractions[i + 1] - discard_fractions[i])
        e0 = error_fractions[0]
        area = e0**2 / 2 - (((e0 - limit) ** 2) / 2 if limit < e0 else 0.0)
        paucs[limit] = pauc - area
    return discard_fractions, error_fractions, paucs


def crfiqa_calculate_roc(gscores: np.ndarray, iscores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ERC/roc.py: calculate_roc(..., ds_scores=True, rates=False)``; thresholds and FM counts."""
    gscores, iscores = gscores * -1, iscores * -1
    values = np.concatenate([gscores, iscores])
    labels = np.concatenate([np.ones(len(gscores)), np.zeros(len(iscores))])
    order = np.argsort(values, kind="stable")  # sorted(gscores + iscores, key=itemgetter(0))
    scores = np.stack([values[order], labels[order]], axis=1)
    cumul = np.cumsum(scores[:, 1])
    thresholds, u_indices = np.unique(scores[:, 0], return_index=True)
    fnm = cumul[u_indices] - scores[u_indices][:, 1]
    fm = len(iscores) - (u_indices - fnm)
    return thresholds * -1, fm


def crfiqa_reference(d: np.ndarray, mated: np.ndarray, q: np.ndarray, fmrs: tuple[float, ...]) -> np.ndarray:
    """``ERC/erc.py: getFNMRFixedTH`` with ``get_eer_threshold`` / ``get_fmr_op``; FNMR per level and target."""
    order = np.argsort(q)
    out = []
    for u in np.arange(0, 0.98, 0.05):
        kept = order[int(u * len(q)) :]
        pos, neg = np.sort(d[kept][mated[kept] == 1]), np.sort(d[kept][mated[kept] == 0])
        thrs, fm = crfiqa_calculate_roc(pos, neg)
        fmr = fm / len(neg)
        row = []
        for op in fmrs:
            threshold = thrs[np.argmin(abs(fmr - op))]
            g_true = [g for g in pos if g < threshold]
            row.append(1 - len(g_true) / len(pos))
        out.append(row)
    return np.array(out)


def magface_reference(d: np.ndarray, mated: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``eval/eval_quality/eval_quality.py: perform_1v1_quality_eval``, FNMR at "FMR = 1e-3" per level."""
    order = np.argsort(q)
    out = []
    for u in np.arange(0, 0.98, 0.05):
        kept = order[int(u * len(q)) :]
        pos, neg = np.sort(d[kept][mated[kept] == 1]), np.sort(d[kept][mated[kept] == 0])
        fmr, idx = 1.0, len(neg) - 1
        while idx >= 0:
            thresh = neg[idx]
            num_acc = sum(pos < thresh)
            if fmr == 1e-3:
                out.append(1.0 * (len(pos) - num_acc) / len(pos))
            if idx == 0:
                break
            idx = int(idx / 10)
            fmr /= 10.0
    return np.array(out)


# ------------------------------------------------------------------------------------------ benchmark


def run() -> list[dict[str, Any]]:
    """Time the library in each convention and the reference re-implementations; one dict per row."""
    rows: list[dict[str, Any]] = []
    qa, qb, s, y = synthetic(N)
    ma, mb, ms, my = synthetic(N, all_mated=True)
    d = np.arccos(np.clip(s, -1, 1)) / math.pi
    q = np.minimum(qa, qb)

    def library(convention: str, fmr: tuple[float, ...]) -> Callable[[], Any]:
        return lambda: edc(s, y, qa, qb, convention=convention, fmr=fmr, discard_limits=LIMITS)

    cases = [
        ("library fixed_threshold", library("fixed_threshold", (1e-3, 1e-4)), "1M pairs (200k mated), FMR 1e-3/1e-4"),
        (
            "library fixed_threshold (1M mated)",
            lambda: edc(ms, my, ma, mb, starting_error=0.05, discard_limits=LIMITS),
            "1M mated comparisons, starting error 0.05",
        ),
        ("library crfiqa", library("crfiqa", (1e-2, 1e-3, 1e-4)), "1M pairs, FMR 1e-2/1e-3/1e-4"),
        ("library magface", library("magface", (1e-3,)), "1M pairs, FMR 1e-3"),
    ]
    results = {}
    for name, fn, note in cases:
        seconds, results[name] = best_of(fn)
        rows.append({"name": name, "seconds": seconds, "peak_mib": peak_mib(fn), "note": note + "; goal < 0.150 s"})

    start = time.perf_counter()
    pairs = dasec_build_input(ma, mb, ms)
    build = time.perf_counter() - start
    seconds, (x, e, paucs) = best_of(lambda: dasec_compute(pairs, 0.05), repeats=2)
    mine = results["library fixed_threshold (1M mated)"].curves["starting_error=0.05"]
    curve_diff = max(float(np.max(np.abs(x - mine.discard_fractions))), float(np.max(np.abs(e - mine.error_fractions))))
    pauc_diff = max(abs(paucs[limit] - mine.pauc_minus_best[limit]) for limit in LIMITS)
    note = f"curve max |diff| {curve_diff:.1e}, pAUC-A* max |diff| {pauc_diff:.1e} (summation order)"
    rows.append({"name": "reference dasec (build input)", "seconds": build, "peak_mib": None, "note": "list of dicts"})
    rows.append({"name": "reference dasec (compute_edc + pAUC)", "seconds": seconds, "peak_mib": None, "note": note})

    start = time.perf_counter()
    fnmr = crfiqa_reference(d, y, q, (1e-2, 1e-3, 1e-4))
    seconds = time.perf_counter() - start
    mine = results["library crfiqa"]
    diff = max(float(np.max(np.abs(fnmr[:, j] - c.error_fractions))) for j, c in enumerate(mine.curves.values()))
    rows.append({"name": "reference crfiqa", "seconds": seconds, "peak_mib": None, "note": f"max |diff| {diff:.1e}"})

    start = time.perf_counter()
    fnmr = magface_reference(d, y, q)
    seconds = time.perf_counter() - start
    diff = float(np.max(np.abs(fnmr - results["library magface"].curves["fmr=0.001"].error_fractions)))
    rows.append({"name": "reference magface", "seconds": seconds, "peak_mib": None, "note": f"max |diff| {diff:.1e}"})
    return rows


def main() -> None:
    """Print the rows as a Markdown table."""
    print("| name | seconds | peak MiB | note |")
    print("|---|---|---|---|")
    for row in run():
        peak = "" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        print(f"| {row['name']} | {row['seconds']:.4f} | {peak} | {row['note']} |", flush=True)


if __name__ == "__main__":
    main()
