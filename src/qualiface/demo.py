"""``qualiface demo``: train a small quality-aware model on the built-in synthetic faces, evaluate it, write a report.

The demo trains an iResNet-18 (32×32 input, 128-d embedding) with CR-FIQA's quality branch and head on synthetic
identities whose per-image degradation is known (:mod:`qualiface.data.synthetic`), then evaluates on identities
the training never saw (another seed):

* verification: insightface 10-fold accuracy (flip fusion), VAL@FAR, TAR@FAR, EER and AUC;
* quality: the model's score of every held-out image (its model card's quality, through the library's one
  inference path :func:`qualiface.models.embed_images`), its Spearman ρ
  and Kendall τ-b with the known ``quality_truth = 1 - severity``;
* the EDC (fixed threshold at FMR 1e-2, pair quality = min of the two; docs/protocols.md, 'Fixed-threshold EDC')
  of the model's quality and of the truth, against the random and oracle reference curves, with pAUC.

Everything goes to ``out_dir/run`` (the training run: config, metrics.csv, checkpoint, model.pt) and
``out_dir/report`` (config.yaml, metrics.json, roc.png, edc.png, summary.md).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import qualiface
from qualiface.config.io import config_from_dict, dump_config
from qualiface.config.schema import ExperimentConfig
from qualiface.eval.results import to_plain

__all__ = ["DemoResult", "demo_config", "run_demo"]

#: FMR of the fixed EDC threshold (1e-3 would rest on a handful of non-mated pairs of the held-out set).
EDC_FMR = 1e-2
#: pAUC discard limit reported in the summary.
DISCARD_LIMIT = 0.2

_FULL = {
    "steps": 500,
    "num_identities": 128,
    "images_per_identity": 16,
    "batch_size": 64,
    "held_out_identities": 200,
    "held_out_per_identity": 8,
    "num_pairs": 6000,
}
_QUICK = {
    "steps": 3,
    "num_identities": 8,
    "images_per_identity": 4,
    "batch_size": 16,
    "held_out_identities": 8,
    "held_out_per_identity": 4,
    "num_pairs": 200,
}


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the key figures (held-out identities)."""

    report_dir: Path
    run_dir: Path
    config_path: Path
    metrics_path: Path
    summary_path: Path
    plots: dict[str, Path]
    accuracy: float
    accuracy_std: float
    eer: float
    auc: float
    spearman: float
    kendall: float
    pauc: float
    pauc_truth: float
    pauc_random: float
    pauc_oracle: float
    train_seconds: float
    total_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)
    precision: str = "fp32"

    def summary_lines(self) -> list[str]:
        """The key figures as short lines (what the CLI prints)."""
        return [
            f"verification accuracy (10-fold, held-out ids): {self.accuracy:.4f} ± {self.accuracy_std:.4f} "
            f"(chance 0.5); EER {self.eer:.4f}; AUC {self.auc:.4f}",
            f"quality vs known degradation: Spearman {self.spearman:.3f}, Kendall {self.kendall:.3f}",
            f"EDC pAUC@{DISCARD_LIMIT:g} (lower is better): model {self.pauc:.4f}, truth {self.pauc_truth:.4f}, "
            f"random {self.pauc_random:.4f}, oracle {self.pauc_oracle:.4f}",
            f"time: training {self.train_seconds:.0f} s ({self.precision}), total {self.total_seconds:.0f} s",
        ]


def demo_config(
    out_dir: str | Path,
    *,
    steps: int | None = None,
    quick: bool = False,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> ExperimentConfig:
    """The demo's training config (checked by :func:`~qualiface.config.config_from_dict`); ``overrides`` are
    dotted ``key=value`` settings applied last, as ``qualiface train --set``."""
    sizes = _QUICK if quick else _FULL
    total = int(steps if steps is not None else sizes["steps"])
    if total < 1:
        raise ValueError(f"steps must be >= 1, got {total}")
    data: dict[str, Any] = {
        "name": "demo-quick" if quick else "demo",
        "model": {
            "backbone": "iresnet18",
            "kwargs": {"quality_branch": "cr_fiqa", "input_size": 32, "embedding_dim": 128},
        },
        "head": {"name": "cr_fiqa"},
        "data": {
            "source": "synthetic",
            "synthetic": {
                "num_identities": sizes["num_identities"],
                "images_per_identity": sizes["images_per_identity"],
                "size": 32,
                "seed": 0,
            },
            "batch_size": sizes["batch_size"],
            "num_workers": 0,
            "augment": "flip",
        },
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "poly", "warmup_steps": max(1, total // 20)},
        "train": {
            "out_dir": str(Path(out_dir) / "run"),
            "steps": total,
            # pinned: the README's figures were measured in fp32 (auto would pick bf16 on CPUs with bf16 matrix
            # units; bf16 stays within the fold standard deviation, README "Demo")
            "precision": "fp32",
            "grad_clip": 5.0,
            "seed": 2048,
            "log_every": max(1, min(10, total)),
            "checkpoint_every": total,
            "keep_checkpoints": 1,
            "device": "cpu",
        },
        "eval": {"sets": []},
        "log": {"progress": progress},
    }
    return config_from_dict(data, list(overrides))


def _held_out(cfg: ExperimentConfig, quick: bool) -> Any:
    """Pairs over identities disjoint from the training ones (the training seed plus a fixed offset)."""
    from qualiface.train.evaluation import held_out_synthetic

    sizes = _QUICK if quick else _FULL
    synthetic = dataclasses.replace(
        cfg.data.synthetic,
        num_identities=sizes["held_out_identities"],
        images_per_identity=sizes["held_out_per_identity"],
    )
    image_size = int(cfg.data.synthetic.size)
    return held_out_synthetic(synthetic, sizes["num_pairs"], image_size, name="synthetic_held_out")


@torch.inference_mode()
def _correlation(quality: np.ndarray, truth: np.ndarray, name: str) -> Any:
    """Spearman / Kendall of quality against truth; NaN figures when a score is constant (an untrained model)."""
    from qualiface.eval.correlation import RankCorrelation, rank_correlation

    try:
        return rank_correlation(quality, truth, x_name=f"quality ({name})", y_name="quality_truth")
    except ValueError:
        nan = float("nan")
        return RankCorrelation(f"quality ({name})", "quality_truth", int(quality.size), nan, nan, nan, nan)


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    steps: int | None = None,
    quick: bool = False,
    progress: bool = True,
    overrides: Sequence[str] = (),
    threads: int | None = None,
) -> DemoResult:
    """Train, evaluate on held-out synthetic identities and write ``out_dir/report`` (see the module docstring).

    Args:
        out_dir: the demo folder; ``run/`` (training) and ``report/`` go inside.
        steps: training steps (default 500; 3 with ``quick``).
        quick: a seconds-long smoke run on a handful of identities (its figures mean nothing).
        progress: show the training progress bar.
        overrides: dotted ``key=value`` config settings, e.g. ``("optim.lr=0.05",)``.
        threads: ``torch.set_num_threads`` for the run, set back afterwards; ``None`` keeps PyTorch's choice (one
            per core). On a 2-core machine that other work shares, ``1`` can be several times faster.
    """
    from qualiface.eval.edc import FixedThresholdEDC, edc, edc_oracle, edc_random
    from qualiface.eval.fusion import fuse_flip, l2_normalize
    from qualiface.eval.plots import plot_edc, plot_roc
    from qualiface.eval.verification import evaluate_verification
    from qualiface.models import embed_images, load_model
    from qualiface.run_layout import RunLayout
    from qualiface.train import train

    start = time.perf_counter()
    out_dir = Path(out_dir)
    report_dir = out_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out_dir, steps=steps, quick=quick, progress=progress, overrides=overrides)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = train(cfg, overwrite=True)  # out_dir/run is the demo's own: a second demo replaces the first
        train_seconds = time.perf_counter() - start

        model = load_model(result.model_path or RunLayout(result.run_dir).model_file)
        vset = _held_out(cfg, quick)
        pairs = vset.info["pairs"]
        dataset = vset.info["dataset"]

        embedded = embed_images(model, vset.images, batch_size=256, flip=True, quality=True)
        emb, flipped, quality_f32 = embedded.embeddings, embedded.flipped, embedded.quality
        assert flipped is not None
        assert quality_f32 is not None
        verification = evaluate_verification(
            emb[vset.index_a],
            vset.issame,
            embeddings_b=emb[vset.index_b],
            flip=flipped[vset.index_a],
            flip_b=flipped[vset.index_b],
        )

        quality_name = model.quality_method or "feature_norm"
        quality = quality_f32.astype(np.float64)
        truth = np.asarray(dataset.quality_truth, dtype=np.float64)
        correlation = _correlation(quality, truth, quality_name)
    finally:
        torch.set_num_threads(previous_threads)

    # Comparison scores: cosine of the flip-fused embeddings, as the verification's all-pairs figures.
    fused = l2_normalize(fuse_flip(emb, flipped, "sum_raw"))
    cosine = np.einsum("ij,ij->i", fused[vset.index_a], fused[vset.index_b])
    mated = vset.issame.astype(bool)
    limits = (DISCARD_LIMIT, 0.3)
    options: dict[str, Any] = {"fmr": EDC_FMR, "discard_limits": limits}
    edc_model = edc(cosine, mated, quality[vset.index_a], quality[vset.index_b], method=quality_name, **options)
    edc_truth = edc(cosine, mated, pairs.quality_a, pairs.quality_b, method="quality_truth", **options)
    edc_rand = edc_random(cosine, mated, progress=False, **options)
    edc_best = edc_oracle(cosine, mated, **options)
    label = next(iter(edc_model.curves))
    model_curve = edc_model.curves[label]
    assert isinstance(model_curve, FixedThresholdEDC)  # edc's default convention, fixed_threshold

    def pauc(result: Any, limit: float = DISCARD_LIMIT) -> float:
        return float(result.curves[label].pauc[limit])

    plots = {
        "roc": plot_roc(
            {"held-out pairs": (verification.all_pairs_fpr, verification.all_pairs_tpr)},
            report_dir / "roc.png",
            title=f"ROC, held-out synthetic identities (AUC {verification.auc:.3f})",
        ),
        "edc": plot_edc(
            {
                f"model quality ({quality_name})": edc_model.curve_points(label),
                "known degradation (truth)": edc_truth.curve_points(label),
            },
            report_dir / "edc.png",
            title=f"FNM-EDC at FMR {EDC_FMR:g} (pair quality = min)",
            reference={"random": edc_rand.curve_points(label), "oracle": edc_best.curve_points(label)},
            discard_limit=DISCARD_LIMIT,
        ),
    }
    config_path = report_dir / "config.yaml"
    dump_config(cfg, config_path)

    by_degradation = _quality_by_degradation(dataset, quality)
    total_seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {
        "quick": quick,
        "held_out": {
            "identities": int(dataset.num_identities),
            "images": len(dataset),
            "pairs": len(pairs),
            "genuine_pairs": int(mated.sum()),
            "impostor_pairs": int((~mated).sum()),
            "seed": int(dataset.seed),
        },
        "training": {
            "steps": int(result.step),
            "precision": result.precision,
            "train_seconds": train_seconds,
            "last": dict(result.last_metrics),
            "run_dir": str(result.run_dir),
        },
        "verification": {
            "accuracy": float(verification.accuracy),
            "accuracy_std": float(verification.accuracy_std),
            "chance_accuracy": 0.5,
            "val": float(verification.val),
            "far": float(verification.far),
            "far_target": float(verification.far_target),
            "tar_at_far": dict(verification.tar_at_far),
            "eer": float(verification.eer),
            "auc": float(verification.auc),
        },
        "quality": {
            "estimator": quality_name,
            "spearman_rho": correlation.spearman_rho,
            "spearman_pvalue": correlation.spearman_pvalue,
            "kendall_tau_b": correlation.kendall_tau_b,
            "kendall_pvalue": correlation.kendall_pvalue,
            "n": correlation.n,
            "mean_by_degradation": by_degradation,
        },
        "edc": {
            "convention": "fixed_threshold",
            "error": "fnmr",
            "fmr": EDC_FMR,
            "pair_quality": "min",
            "operating_point": label,
            "threshold": float(model_curve.threshold),
            "starting_error": float(model_curve.starting_error),
            "pauc": {
                f"{limit:g}": {
                    "model": pauc(edc_model, limit),
                    "truth": pauc(edc_truth, limit),
                    "random": pauc(edc_rand, limit),
                    "oracle": pauc(edc_best, limit),
                }
                for limit in limits
            },
        },
        "timing": {"train_seconds": train_seconds, "total_seconds": total_seconds},
        "environment": {
            "qualiface": qualiface.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": threads or previous_threads,
        },
    }
    metrics_path = report_dir / "metrics.json"
    metrics = to_plain(metrics)  # NaN and inf become null
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    demo = DemoResult(
        report_dir=report_dir,
        run_dir=Path(result.run_dir),
        config_path=config_path,
        metrics_path=metrics_path,
        summary_path=report_dir / "summary.md",
        plots=plots,
        accuracy=float(verification.accuracy),
        accuracy_std=float(verification.accuracy_std),
        eer=float(verification.eer),
        auc=float(verification.auc),
        spearman=float(correlation.spearman_rho),
        kendall=float(correlation.kendall_tau_b),
        pauc=pauc(edc_model),
        pauc_truth=pauc(edc_truth),
        pauc_random=pauc(edc_rand),
        pauc_oracle=pauc(edc_best),
        train_seconds=train_seconds,
        total_seconds=total_seconds,
        metrics=metrics,
        precision=result.precision,
    )
    command = ["qualiface demo"] + ([f"--out {out_dir}"] if out_dir != Path("runs/demo") else [])
    command += [f"--steps {steps}"] * (steps is not None) + ["--quick"] * quick
    command += [f"--threads {threads}"] * (threads is not None) + [f"--set {o}" for o in overrides]
    demo.summary_path.write_text(_summary(demo, cfg, " ".join(command)))
    return demo


def _quality_by_degradation(dataset: Any, quality: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean model quality and mean truth per degradation type (``none`` = clean)."""
    kinds = np.array([dataset.spec(i).degradation for i in range(len(dataset))])
    truth = np.asarray(dataset.quality_truth)
    return {
        str(kind): {
            "count": int((kinds == kind).sum()),
            "mean_quality": float(quality[kinds == kind].mean()),
            "mean_truth": float(truth[kinds == kind].mean()),
        }
        for kind in sorted(set(kinds.tolist()))
    }


def _threads_text(threads: int) -> str:
    return f"{threads} CPU thread" + ("" if threads == 1 else "s")


def _summary(demo: DemoResult, cfg: ExperimentConfig, command: str) -> str:
    """The Markdown summary of one demo run."""
    m = demo.metrics
    held = m["held_out"]
    ver = m["verification"]
    edc_info = m["edc"]
    tar = ver["tar_at_far"]
    tar_text = ", ".join(f"{k}: {v:.3f}" for k, v in tar.items() if v is not None and float(k) >= 1e-3)
    rows = "\n".join(
        f"| {kind} | {v['count']} | {v['mean_truth']:.3f} | {v['mean_quality']:.3f} |"
        for kind, v in m["quality"]["mean_by_degradation"].items()
    )
    note = (
        "\n> **Quick smoke run**: a few steps on a handful of identities; the figures below mean nothing.\n"
        if m["quick"]
        else ""
    )
    return f"""# qualiface demo
{note}
An `{cfg.model.backbone}` ({cfg.model.kwargs.get("input_size")}×{cfg.model.kwargs.get("input_size")} input, \
{cfg.model.kwargs.get("embedding_dim")}-d embedding) with CR-FIQA's quality branch, trained with the \
`{cfg.head.name}` head for {m["training"]["steps"]} steps (batch {cfg.data.batch_size}) on \
{cfg.data.synthetic.num_identities} synthetic identities × {cfg.data.synthetic.images_per_identity} images whose \
degradation (blur, noise, low resolution, occlusion, illumination) is known. Evaluated on {held["identities"]} \
**held-out** identities ({held["images"]} images, {held["pairs"]} pairs: {held["genuine_pairs"]} genuine, \
{held["impostor_pairs"]} impostor) that training never saw.

## Verification

| figure | value | meaning |
|---|---|---|
| 10-fold accuracy | **{demo.accuracy:.4f}** ± {demo.accuracy_std:.3f} | insightface protocol, flip fusion; chance 0.5 |
| EER | {demo.eer:.4f} | equal error rate over all pairs (chance 0.5) |
| AUC | {demo.auc:.4f} | area under the ROC (chance 0.5) |
| TAR@FAR | {tar_text} | true accepts at a false accept rate |

![ROC](roc.png)

## Quality

The model's quality score (`{m["quality"]["estimator"]}`, higher = better) of every held-out image against the \
known `quality_truth = 1 - severity`:

| figure | value | meaning |
|---|---|---|
| Spearman ρ | **{demo.spearman:.3f}** | rank correlation with the truth; 0 = no relation, 1 = same order |
| Kendall τ-b | {demo.kendall:.3f} | the same, by concordant pairs |

| degradation | images | mean truth | mean model quality |
|---|---|---|---|
{rows}

## Error versus discard (EDC)

Pairs are sorted by pair quality (the lower of the two images' scores) and the worst are discarded; the curve is
the false non-match rate of the kept genuine pairs at a threshold fixed at FMR {edc_info["fmr"]:g} on all pairs
(ISO/IEC 29794-1 style; starting FNMR {edc_info["starting_error"]:.4f}). A useful quality
drops the curve quickly: lower pAUC is better. *random* is a quality that carries no information, *oracle* one
that discards the errors first.

| pAUC@{DISCARD_LIMIT:g} | value |
|---|---|
| model quality | **{demo.pauc:.4f}** |
| known degradation (truth) | {demo.pauc_truth:.4f} |
| random (no information) | {demo.pauc_random:.4f} |
| oracle (best possible) | {demo.pauc_oracle:.4f} |

![EDC](edc.png)

## Reproduce

```bash
pip install torch==2.13.0 -e ".[dev]"
{command}
qualiface train {demo.config_path}   # the training run alone, from the resolved config
```

Training took {demo.train_seconds:.0f} s in {demo.precision}, the whole demo {demo.total_seconds:.0f} s \
({_threads_text(m["environment"]["threads"])}, torch {m["environment"]["torch"]}). All figures are in \
`metrics.json`; the training run (metrics.csv, checkpoint, model.pt) is in `{demo.run_dir}`.
"""
