"""The WebFace42M ViT recipes (configs/wf42m_*vit*.yaml) against arcface_torch's config files, field by field.

The official values are transcribed below from ``recognition/arcface_torch/configs/<recipe>.py``; the fields a file
leaves out come from ``configs/base.py``, and ``train_v2.py`` fixes the rest (CosFace/ArcFace scale 64 in
``CombinedMarginLoss(64, ...)``, ``clip_grad_norm_(backbone.parameters(), 5)``, AdamW with torch's default betas
over every parameter of the backbone and the Partial FC, ``PolynomialLRWarmup`` with power 1 stepped per
iteration, random horizontal flip only). Nothing here reads the insightface mirror.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qualiface.config import ExperimentConfig, load_config
from qualiface.train.optim import lr_factor, total_steps

CONFIGS = Path(__file__).parents[2] / "configs"

# Every ViT recipe file sets these (configs/wf42m_pfc03_40epoch_*_vit_*.py).
COMMON: dict[str, Any] = {
    "margin_list": (1.0, 0.0, 0.4),
    "resume": False,
    "output": None,
    "embedding_size": 512,
    "sample_rate": 0.3,
    "fp16": True,
    "weight_decay": 0.1,
    "optimizer": "adamw",
    "lr": 0.001,
    "verbose": 2000,
    "dali": False,
    "rec": "/train_tmp/WebFace42M",
    "num_classes": 2059906,
    "num_image": 42474557,
    "num_epoch": 40,
    "warmup_epoch": 40 // 10,
    "val_targets": [],
}
# configs/base.py values of the fields the recipe files do not set.
BASE: dict[str, Any] = {
    "gradient_acc": 1,
    "seed": 2048,
    "num_workers": 2,
    "frequent": 10,
    "interclass_filtering_threshold": 0,
    "dali_aug": False,
}
OFFICIAL: dict[str, dict[str, Any]] = {
    "wf42m_pfc03_40epoch_8gpu_vit_t": {**BASE, **COMMON, "network": "vit_t_dp005_mask0", "batch_size": 512},
    "wf42m_pfc03_40epoch_8gpu_vit_b": {
        **BASE,
        **COMMON,
        "network": "vit_b_dp005_mask_005",
        "batch_size": 256,
        "gradient_acc": 12,
    },
    "wf42m_pfc03_40epoch_64gpu_vit_t": {**BASE, **COMMON, "network": "vit_t_dp005_mask0", "batch_size": 384},
    "wf42m_pfc03_40epoch_64gpu_vit_s": {**BASE, **COMMON, "network": "vit_s_dp005_mask_0", "batch_size": 384},
    "wf42m_pfc03_40epoch_64gpu_vit_b": {**BASE, **COMMON, "network": "vit_b_dp005_mask_005", "batch_size": 384},
    "wf42m_pfc03_40epoch_64gpu_vit_l": {**BASE, **COMMON, "network": "vit_l_dp005_mask_005", "batch_size": 384},
}
GPUS = {stem: 8 if "_8gpu_" in stem else 64 for stem in OFFICIAL}


def cosface_of(margin_list: tuple[float, float, float]) -> tuple[str, float]:
    """arcface_torch's combined margin cos(m1·θ + m2) − m3 with m1 = 1, m2 = 0 is CosFace with margin m3."""
    m1, m2, m3 = margin_list
    assert (m1, m2) == (1.0, 0.0)
    return "cosface", m3


def same(value: Any) -> Any:
    return value


# official field -> (qualiface config paths, the value(s) expected there from the official value)
MAPPED: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "network": (("model.backbone",), same),
    "embedding_size": (("model.kwargs.embedding_dim",), same),
    "margin_list": (("head.name", "head.kwargs.margin"), cosface_of),
    "sample_rate": (("head.sample_rate",), same),
    "fp16": (("train.precision",), lambda fp16: "fp16-cuda" if fp16 else "fp32-cuda"),
    "weight_decay": (("optim.weight_decay",), same),
    "batch_size": (("data.batch_size",), same),
    "optimizer": (("optim.name",), same),
    "lr": (("optim.lr",), same),
    "verbose": (("eval.every",), same),
    "rec": (("data.path",), lambda rec: f"{rec}/train.rec"),  # the folder holds train.rec / train.idx
    "num_classes": (("data.num_classes",), same),
    "num_epoch": (("train.epochs",), same),
    "warmup_epoch": (("schedule.warmup_epochs",), same),
    "val_targets": (("eval.sets",), same),
    "seed": (("train.seed",), same),
    "num_workers": (("data.num_workers",), same),
    "frequent": (("train.log_every",), same),
    "gradient_acc": (("train.grad_accumulation",), same),
}
# Official fields with no config path, and the only official value qualiface reproduces.
UNMAPPED: dict[str, Any] = {
    "resume": False,  # a run is resumed with the CLI's --resume, not by its recipe
    "output": None,  # the run directory is train.out_dir, set per recipe
    "dali": False,  # qualiface's DataLoader is arcface_torch's non-DALI path
    "dali_aug": False,
    "num_image": 42474557,  # the epoch length comes from the data (checked below through the schedule)
    "interclass_filtering_threshold": 0,  # 0 = no inter-class filtering
}
# train_v2.py's fixed choices, the same for every recipe.
TRAIN_V2: dict[str, Any] = {
    "head.kwargs.scale": 64.0,
    "train.grad_clip": 5.0,
    "train.grad_clip_over": "backbone",
    "optim.betas": [0.9, 0.999],
    "optim.no_decay": "none",
    "optim.head_lr": None,
    "optim.head_weight_decay": None,
    "schedule.name": "poly",
    "schedule.power": 1.0,
    "schedule.warmup_steps": 0,
    "data.source": "recordio",
    "data.augment": "flip",
    "train.steps": None,
}
HEADER = re.compile(
    r"^# official: deepinsight/insightface recognition/arcface_torch/configs/"
    r"(?P<file>\S+\.py) @ (?P<commit>[0-9a-f]{40})$"
)


def value_at(cfg: ExperimentConfig, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def header(stem: str) -> list[str]:
    lines = (CONFIGS / f"{stem}.yaml").read_text(encoding="utf-8").splitlines()
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]


def test_every_vit_recipe_is_in_the_table():
    assert sorted(p.stem for p in CONFIGS.glob("wf42m_*vit*.yaml")) == sorted(OFFICIAL)


@pytest.mark.parametrize("stem", sorted(OFFICIAL))
def test_every_official_field_is_mapped_or_accounted_for(stem):
    assert set(OFFICIAL[stem]) <= set(MAPPED) | set(UNMAPPED)
    assert not set(MAPPED) & set(UNMAPPED)


@pytest.mark.parametrize("stem", sorted(OFFICIAL))
def test_recipe_fields_equal_the_official_values(stem):
    cfg = load_config(CONFIGS / f"{stem}.yaml")
    official = OFFICIAL[stem]
    for field, (paths, convert) in MAPPED.items():
        want = convert(official[field])
        got = tuple(value_at(cfg, p) for p in paths) if len(paths) > 1 else value_at(cfg, paths[0])
        assert got == want, (field, paths)
    for path, want in TRAIN_V2.items():
        assert value_at(cfg, path) == want, path
    assert cfg.name == stem


@pytest.mark.parametrize("stem", sorted(OFFICIAL))
def test_unmapped_fields_hold_the_reproducible_value_or_the_header_states_the_deviation(stem):
    text = "\n".join(header(stem))
    for field, reproducible in UNMAPPED.items():
        value = OFFICIAL[stem][field]
        if value != reproducible:
            assert f"Deviation: the official run accumulates {field} = {value}" in text, field


@pytest.mark.parametrize("stem", sorted(OFFICIAL))
def test_header_names_the_official_file_and_a_commit(stem):
    lines = header(stem)
    match = HEADER.match(lines[0])
    assert match is not None, lines[0]
    assert match["file"] == f"{stem}.py"
    assert len(lines) >= 2  # then what it reproduces
    assert any(f"{GPUS[stem]} GPUs" in line for line in lines[1:])


@pytest.mark.parametrize("stem", sorted(OFFICIAL))
def test_lr_schedule_equals_polynomial_lr_warmup(stem):
    """train_v2.py: warmup_step = num_image // (batch · world) · warmup_epoch, total_step = the same · num_epoch;
    PolynomialLRWarmup's closed form at step l is l/w during the warm-up, then (1 − (l − w)/(t − w))^1."""
    cfg = load_config(CONFIGS / f"{stem}.yaml")
    official = OFFICIAL[stem]
    per_epoch = official["num_image"] // (official["batch_size"] * GPUS[stem])
    w, t = per_epoch * official["warmup_epoch"], per_epoch * official["num_epoch"]
    steps_per_epoch = official["num_image"] // (cfg.data.batch_size * GPUS[stem])
    assert total_steps(cfg.train.steps, cfg.train.epochs, steps_per_epoch) == t
    factor = lr_factor(cfg.schedule, t, steps_per_epoch)
    for step in (0, 1, w // 2, w - 1, w, w + 1, (w + t) // 2, t - 1):
        want = step / w if step <= w else (1.0 - (step - w) / (t - w))
        assert factor(step) == pytest.approx(want, rel=1e-12, abs=1e-15), step
