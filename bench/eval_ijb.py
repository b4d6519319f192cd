"""IJB-C-scale 1:1 scoring and ROC: 23,124 synthetic templates x 512 and 15,658,489 template pairs.

Usage::

    python bench/eval_ijb.py            # prints a Markdown table (bench/eval.py collects it into results/eval.json)

Synthetic data shaped like IJB-C: 3,531 "gallery" templates (one per subject) and 19,593 "probe" templates of
those subjects; 19,557 genuine pairs (a probe and its subject's gallery template, genuinely more similar) and
15,638,932 impostor pairs of different subjects. Two pair layouts are timed:

- ``bipartite``: every pair is (gallery, probe), as the IJB-B/C protocol files are (IJB-B: 1,845 distinct first
  templates, 10,270 distinct second templates);
- ``uniform``: impostor pairs drawn over all 23,124 templates (the worst case for block scoring).

Rows: block scoring (:func:`qualiface.eval.ijb.score_template_pairs`, float32 and float64), the row-gather
baseline ``(T[a] * T[b]).sum(1)`` in chunks of 100,000 pairs (how insightface scores), the ROC with TAR@FAR in
both modes, EER and AUC from one sort (:func:`qualiface.eval.ijb.verification_from_scores`), and
``sklearn.metrics.roc_curve`` plus the nearest-FPR selection for comparison. ``peak_mib`` is the process's
``VmHWM`` (peak resident set) after resetting it just before the measured part, so it includes the inputs that
are already resident (templates and pair indices, about 170 MiB).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

N_GALLERY = 3_531
N_PROBE = 19_593
N_PAIRS = 15_658_489
N_GENUINE = 19_557
DIM = 512


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _measure(fn: Any) -> tuple[Any, float, float | None]:
    """``(result, seconds, peak MiB)`` of ``fn()``; peak = VmHWM after a reset (None where unsupported)."""
    resettable = _reset_peak()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = _vm_kib("VmHWM") / 1024 if resettable else None
    return out, seconds, peak


def synthetic(seed: int = 0, layout: str = "bipartite") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(templates (23124, 512) float32 unit rows, idx1, idx2 (int64), labels (int8))``."""
    rng = np.random.default_rng(seed)
    n_templates = N_GALLERY + N_PROBE
    subject = np.r_[np.arange(N_GALLERY), rng.integers(0, N_GALLERY, N_PROBE)]
    centers = rng.standard_normal((N_GALLERY, DIM), dtype=np.float32)
    templates = 0.6 * centers[subject] + rng.standard_normal((n_templates, DIM), dtype=np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    probes = N_GALLERY + np.arange(N_GENUINE)
    genuine = (subject[probes], probes)  # a probe and the gallery template of its subject
    n_impostor = N_PAIRS - N_GENUINE
    if layout == "bipartite":
        a = rng.integers(0, N_GALLERY, n_impostor)
        b = rng.integers(N_GALLERY, n_templates, n_impostor)
    else:
        a = rng.integers(0, n_templates, n_impostor)
        b = rng.integers(0, n_templates, n_impostor)
    clash = subject[a] == subject[b]
    while clash.any():  # impostors must be of different subjects
        b[clash] = rng.integers(N_GALLERY if layout == "bipartite" else 0, n_templates, int(clash.sum()))
        clash = subject[a] == subject[b]
    idx1 = np.r_[genuine[0], a].astype(np.int64)
    idx2 = np.r_[genuine[1], b].astype(np.int64)
    labels = np.r_[np.ones(N_GENUINE, np.int8), np.zeros(n_impostor, np.int8)]
    order = rng.permutation(N_PAIRS)
    return templates, idx1[order], idx2[order], labels[order]


def _sklearn_tar(scores: np.ndarray, labels: np.ndarray) -> dict[float, float]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return {far: float(tpr[np.argmin(np.abs(fpr - far))]) for far in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)}


def run(*, gather: bool = True, sklearn: bool = True) -> list[dict[str, Any]]:
    """Benchmark rows: ``name``, ``seconds``, ``peak_mib`` (or None), ``note``."""
    from qualiface.eval.ijb import score_template_pairs, score_template_pairs_gather, verification_from_scores

    rows: list[dict[str, Any]] = []
    shape = f"{N_GALLERY + N_PROBE:,} x {DIM} templates, {N_PAIRS:,} pairs ({N_GENUINE:,} genuine)"
    templates, idx1, idx2, labels = synthetic(layout="bipartite")
    rss = _vm_kib("VmRSS") / 1024

    scores, t_score, p_score = _measure(lambda: score_template_pairs(templates, idx1, idx2, progress=False))
    rows.append({"name": "score_block_float32 (bipartite)", "seconds": t_score, "peak_mib": p_score, "note": shape})
    result, t_roc, p_roc = _measure(lambda: verification_from_scores(scores, labels))
    tar = ", ".join(f"{far:g}: {100 * v:.2f}" for far, v in result.tar_at_far.items())
    rows.append({"name": "roc_tar_eer_auc (one sort)", "seconds": t_roc, "peak_mib": p_roc, "note": f"TAR@FAR {tar}"})
    del scores, result

    def both() -> Any:
        s = score_template_pairs(templates, idx1, idx2, progress=False)
        return verification_from_scores(s, labels)

    _, t_total, p_total = _measure(both)
    rows.append(
        {
            "name": "scores + ROC/TAR@FAR total",
            "seconds": t_total,
            "peak_mib": p_total,
            "note": f"goal < 5 s and < 2048 MiB; resident before: {rss:.0f} MiB",
        }
    )
    _, t64, p64 = _measure(lambda: score_template_pairs(templates, idx1, idx2, dtype=np.float64, progress=False))
    rows.append({"name": "score_block_float64 (bipartite)", "seconds": t64, "peak_mib": p64, "note": "--float64"})

    if sklearn:
        scores = score_template_pairs(templates, idx1, idx2, progress=False)
        ref, t_sk, p_sk = _measure(lambda: _sklearn_tar(scores, labels))
        ours = verification_from_scores(scores, labels).tar_at_far
        same = "identical TAR" if ref == ours else "TAR DIFFERS"
        rows.append(
            {
                "name": "sklearn roc_curve + nearest (reference)",
                "seconds": t_sk,
                "peak_mib": p_sk,
                "note": f"{t_sk / t_roc:.1f}x the library ROC; {same}",
            }
        )
        del scores
    if gather:
        block = score_template_pairs(templates, idx1, idx2, progress=False)
        gathered, t_g, p_g = _measure(lambda: score_template_pairs_gather(templates, idx1, idx2))
        diff = float(np.max(np.abs(gathered - block)))
        rows.append(
            {
                "name": "row-gather baseline (T[a]*T[b]).sum(1)",
                "seconds": t_g,
                "peak_mib": p_g,
                "note": f"{t_g / t_score:.1f}x block scoring; max |diff| {diff:.1e}",
            }
        )
        del block, gathered

    del templates, idx1, idx2, labels
    templates, idx1, idx2, labels = synthetic(seed=1, layout="uniform")
    _, t_u, p_u = _measure(lambda: score_template_pairs(templates, idx1, idx2, progress=False))
    rows.append(
        {
            "name": "score_block_float32 (uniform pairs)",
            "seconds": t_u,
            "peak_mib": p_u,
            "note": "impostors over all 23,124 templates: the upper triangle of T @ T.T in blocks",
        }
    )
    return rows


def main() -> None:
    """Print the rows as a Markdown table."""
    rows = run()
    print("| name | seconds | peak MiB | note |")
    print("|---|---|---|---|")
    for row in rows:
        peak = "" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        print(f"| {row['name']} | {row['seconds']:.3f} | {peak} | {row['note']} |")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
