"""The recipes in ``configs/`` against the official runs they reproduce (docs/recipes.md).

For each recipe a table written here from the official files: every official field, its official value, the
qualiface field it maps to, and how (a function of the official value). The recipe is loaded with the project's
loader and compared field by field. The header must name each official file with the 40-hex commit that last
changed it (checked against the mirrored repositories when they are present, skipped with a reason otherwise), and
every key of the official config files must appear in the table or in its list of fields without a training effect.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import qualiface
from qualiface.config import ExperimentConfig, load_config

CONFIGS = Path(__file__).parents[2] / "configs"
# bare clones of the official repositories, as <owner>+<name>/repo: QUALIFACE_OFFICIAL_MIRRORS, else ../.mirror
# beside the checkout's folder (where the project's development machines keep them)
MIRRORS = Path(os.environ.get("QUALIFACE_OFFICIAL_MIRRORS") or Path(__file__).resolve().parents[3] / ".mirror")

IF = "deepinsight/insightface"
AT = "recognition/arcface_torch/"


def same(v: Any) -> Any:
    return v


def fp16(v: bool) -> str:
    """``fp16: True`` (fp16 + GradScaler on CUDA) is ``fp16-cuda``; an fp32 run is ``fp32-cuda`` (both ``auto``
    off CUDA: the recipes' choice)."""
    return "fp16-cuda" if v else "fp32-cuda"


def per_process(processes: int) -> Callable[[int], int]:
    """A global batch split over ``processes`` processes."""
    return lambda v: v // processes


def scaled_lr(batch: int, processes: int) -> Callable[[float], float]:
    """CR-FIQA / ScaleFace: ``lr / 512 * batch_size * world_size``."""
    return lambda v: v / 512 * batch * processes


def is_(value: Any) -> Callable[[Any], Any]:
    """A code fact (no config key): the official value is a description, the qualiface value is ``value``."""
    return lambda _v: value


def supported(value: Any) -> Callable[[Any], bool]:
    """A field qualiface has no option for: the recipe is faithful when the official value is the only behaviour."""
    return lambda v: v == value


def eval_names(v: list[str]) -> list[str]:
    return list(v)


@dataclass(frozen=True)
class Row:
    source: str  # key of Recipe.official
    key: str  # the official field (a config key, a flag, or a code fact)
    value: Any  # its official value
    path: str | None  # the qualiface field: a config path, built.backbone.*, built.head.*, header.*; None: no field
    how: Callable[[Any], Any] = same


@dataclass(frozen=True)
class Recipe:
    official: dict[str, tuple[str, str, str]]  # source -> (repo, path, commit)
    rows: list[Row]
    no_effect: dict[str, str] = field(default_factory=dict)  # official keys without a training effect -> why
    keys_from: tuple[str, ...] = ()  # sources whose every key must be covered (rows or no_effect)
    variant_of: str | None = None


ARCFACE_TORCH_NO_EFFECT = {
    "resume": "continuing a run is qualiface train --resume",
    "save_all_states": "qualiface checkpoints every rank's state",
    "output": "train.out_dir",
    "rec": "data.path (the recordio folder of the machine)",
    "num_classes": "taken from the data",
    "num_image": "taken from the data",
    "wandb_key": "logging",
    "suffix_run_name": "logging",
    "using_wandb": "logging",
    "wandb_entity": "logging",
    "wandb_project": "logging",
    "wandb_log_all": "logging",
    "save_artifacts": "logging",
    "wandb_resume": "logging",
}


def arcface_torch_rows(head: str, margin: float, network: str, wd: float, sample_rate: float) -> list[Row]:
    margin_list = (1.0, 0.0, 0.4) if head == "cosface" else (1.0, 0.5, 0.0)
    return [
        Row("config", "margin_list", margin_list, "head.name", lambda v: "cosface" if v[2] > 0 else "arcface"),
        Row("config", "margin_list", margin_list, "head.kwargs.margin", lambda v: v[2] if v[2] > 0 else v[1]),
        Row("config", "network", network, "model.backbone", lambda v: {"r50": "iresnet50", "r100": "iresnet100"}[v]),
        Row("config", "embedding_size", 512, "built.backbone.embedding_dim"),
        Row("config", "sample_rate", sample_rate, "head.sample_rate"),
        Row("config", "fp16", True, "train.precision", fp16),
        Row("config", "momentum", 0.9, "optim.momentum"),
        Row("config", "weight_decay", wd, "optim.weight_decay"),
        Row("config", "batch_size", 128, "data.batch_size"),
        Row("config", "batch_size", 128, "header.batch"),
        Row("config", "lr", 0.1, "optim.lr"),
        Row("config", "verbose", 2000, "eval.every"),
        Row("config", "dali", False, None, supported(False)),
        Row("config", "num_epoch", 20, "train.epochs"),
        Row("config", "warmup_epoch", 0, "schedule.warmup_epochs"),
        Row("config", "val_targets", ["lfw", "cfp_fp", "agedb_30"], "eval.names", eval_names),
        Row("base", "interclass_filtering_threshold", 0, None, supported(0)),
        Row("base", "optimizer", "sgd", "optim.name"),
        Row("base", "frequent", 10, "train.log_every"),
        Row("base", "dali_aug", False, None, supported(False)),
        Row("base", "gradient_acc", 1, None, supported(1)),
        Row("base", "seed", 2048, "train.seed"),
        Row("base", "num_workers", 2, "data.num_workers"),
        Row("train", "CombinedMarginLoss(64, ...)", 64.0, "head.kwargs.scale"),
        Row("train", "get_model(dropout=0.0)", 0.0, "built.backbone.dropout.p"),
        Row("train", "SGD momentum (hard-coded)", 0.9, "optim.momentum"),
        Row(
            "train", "SGD: backbone and partial fc, one weight_decay", "every parameter", "optim.no_decay", is_("none")
        ),
        Row("train", "clip_grad_norm_(backbone.parameters(), 5)", 5.0, "train.grad_clip"),
        Row("train", "clip_grad_norm_(backbone.parameters(), 5)", "backbone", "train.grad_clip_over"),
        Row("train", "PolynomialLRWarmup", "power 1.0", "schedule.name", is_("poly")),
        Row("train", "PolynomialLRWarmup power", 1.0, "schedule.power"),
        Row("train", "torchrun --nproc_per_node=8 (README)", 8, "header.processes"),
        Row("train", "MXFaceDataset transform", "RandomHorizontalFlip", "data.augment", is_("flip")),
        Row("train", "features.weight.requires_grad = False (iresnet.py)", False, "built.backbone.features.weight_rg"),
    ]


def arcface_torch(config: str, config_commit: str, *extra: tuple[str, tuple[str, str, str]]) -> dict:
    return {
        "config": (IF, AT + f"configs/{config}.py", config_commit),
        "base": (IF, AT + "configs/base.py", "ab27f4d60f855b56e98062abaf35bcde69b27c39"),
        "train": (IF, AT + "train_v2.py", "ab27f4d60f855b56e98062abaf35bcde69b27c39"),
        **dict(extra),
    }


GLINT = arcface_torch_rows("cosface", 0.4, "r100", 1e-4, 1.0)
MS1MV3 = arcface_torch_rows("arcface", 0.5, "r50", 5e-4, 1.0)
PFC02 = [
    Row(r.source, r.key, r.value, r.path, (lambda _v: 0.2) if r.path == "head.sample_rate" else r.how) for r in GLINT
]
MAG = "IrvingMeng/MagFace"
CRF = "fdbtrs/CR-FIQA"
UTS = "CVI-SZU/UniTSFace"
ADA = "mk-minchul/AdaFace"
SCF = "stat-ml/scale-face"

RECIPES: dict[str, Recipe] = {
    "glint360k_r100_cosface": Recipe(
        arcface_torch("glint360k_r100", "d9cb10e6bda109bc9b4a6ca8b92d7f3342b56492"),
        GLINT,
        ARCFACE_TORCH_NO_EFFECT,
        keys_from=("config", "base"),
    ),
    "glint360k_r100_pfc02_cosface": Recipe(
        arcface_torch(
            "glint360k_r100",
            "d9cb10e6bda109bc9b4a6ca8b92d7f3342b56492",
            ("pfc", (IF, AT + "partial_fc_v2.py", "4f227ba5b4157df0a995a33bbd25c2e4036a82d5")),
        ),
        PFC02,
        ARCFACE_TORCH_NO_EFFECT,
        keys_from=("config", "base"),
        variant_of="configs/glint360k_r100_cosface.yaml",
    ),
    "ms1mv3_r50_arcface": Recipe(
        arcface_torch(
            "ms1mv3_r50",
            "d9cb10e6bda109bc9b4a6ca8b92d7f3342b56492",
            ("losses", (IF, AT + "losses.py", "9097cd7ba3449d2ec0e567bf7b4178e7ebdbd281")),
        ),
        [
            *MS1MV3,
            Row(
                "losses",
                "margin applied under torch.no_grad()",
                "straight-through",
                "head.kwargs.grad",
                is_("insightface"),
            ),
            Row("losses", "cos(arccos(c) + m), no theta + m > pi branch", "none", "head.kwargs.fallback"),
        ],
        ARCFACE_TORCH_NO_EFFECT,
        keys_from=("config", "base"),
    ),
    "ms1mv2_r50_magface": Recipe(
        {
            "run": (MAG, "run/run.sh", "2952266cea5417c12ca24c73589a8d130cd2e9b3"),
            "trainer": (MAG, "run/trainer.py", "e56dde26ca237275cb1e1b7d2cb670a23f7701a4"),
            "iresnet": (MAG, "models/iresnet.py", "719001a07b3cb87811450d53062d5ae678a4908e"),
            "magface": (MAG, "models/magface.py", "719001a07b3cb87811450d53062d5ae678a4908e"),
            "utils": (MAG, "utils/utils.py", "aa10646d023f88bc751d4a14a492dab67984d7bf"),
            "data": (MAG, "dataloader/dataloader.py", "719001a07b3cb87811450d53062d5ae678a4908e"),
        },
        [
            Row("run", "arch", "iresnet50", "model.backbone"),
            Row("run", "epochs", 25, "train.epochs"),
            Row("run", "batch-size", 512, "data.batch_size", per_process(8)),
            Row("run", "CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7", "header.processes", lambda v: len(v.split(","))),
            Row("run", "embedding-size", 512, "built.backbone.embedding_dim"),
            Row("run", "arc-scale", 64, "head.kwargs.scale"),
            Row("run", "learning-rate", 0.1, "optim.lr"),
            Row("run", "momentum", 0.9, "optim.momentum"),
            Row("run", "weight-decay", 5e-4, "optim.weight_decay"),
            Row("run", "lr-drop-epoch", [10, 18, 22], "schedule.milestones"),
            Row("run", "lr-drop-ratio", 0.1, "schedule.gamma"),
            Row("run", "print-freq", 100, "train.log_every"),
            Row("run", "l_a", 10, "head.kwargs.l_a"),
            Row("run", "u_a", 110, "head.kwargs.u_a"),
            Row("run", "l_margin", 0.45, "head.kwargs.l_m"),
            Row("run", "u_margin", 0.8, "head.kwargs.u_m"),
            Row("run", "lambda_g", 35, "head.kwargs.lambda_g"),
            Row("iresnet", "nn.Dropout2d(p=0.4) after bn2, before the flatten", 0.4, "model.kwargs.dropout"),
            Row(
                "iresnet",
                "nn.Dropout2d(p=0.4) after bn2, before the flatten",
                "Dropout2d",
                "built.backbone.dropout.kind",
            ),
            Row("iresnet", "BatchNorm eps", 2e-5, "model.kwargs.bn_eps"),
            Row("iresnet", "BatchNorm momentum", 0.9, "model.kwargs.bn_momentum"),
            Row("iresnet", "features weight never frozen", True, "model.kwargs.features_weight_trainable"),
            Row("iresnet", "kaiming_normal_(mode='fan_out', nonlinearity='relu')", "kaiming", "model.kwargs.conv_init"),
            Row("magface", "MagLinear(easy_margin=True)", True, "head.kwargs.easy_margin"),
            Row("trainer", "SGD(model.parameters(), weight_decay)", "every parameter", "optim.no_decay", is_("none")),
            Row("trainer", "no clip_grad_norm_", None, "train.grad_clip"),
            Row("trainer", "no autocast / GradScaler", False, "train.precision", fp16),
            Row("utils", "adjust_learning_rate: x ratio when epoch in lr_drop_epoch", "step", "schedule.name"),
            Row("data", "train_trans", "RandomHorizontalFlip", "data.augment", is_("flip")),
        ],
        {
            "train_list": "data.path",
            "workers": "data loading speed",
            "start-epoch": "a new run starts at 0",
            "last-fc-size": "the class count, taken from the data (MS1MV2: 85,742)",
            "pth-save-fold": "train.out_dir",
            "pth-save-epoch": "checkpoint frequency",
            "vis_mag": "diagnostic dumps",
        },
        keys_from=("run",),
    ),
    "webface_r50_crfiqa": Recipe(
        {
            "config": (CRF, "config.py", "e2e4c294a5568e367d77a5e1e44230652dd0269d"),
            "train": (CRF, "train_cr_fiqa.py", "eb03b8131578e654113930071a8e8ca127e4e6e2"),
            "run": (CRF, "run.sh", "68b1460cd4402ccaf89248d63ca40fd423af5032"),
            "iresnet": (CRF, "backbones/iresnet.py", "68b1460cd4402ccaf89248d63ca40fd423af5032"),
            "losses": (CRF, "losses.py", "68b1460cd4402ccaf89248d63ca40fd423af5032"),
        },
        [
            Row("config", "embedding_size", 512, "built.backbone.embedding_dim"),
            Row("config", "momentum", 0.9, "optim.momentum"),
            Row("config", "weight_decay", 5e-4, "optim.weight_decay"),
            Row("config", "batch_size", 128, "data.batch_size"),
            Row("config", "lr", 0.1, "optim.lr", scaled_lr(128, 4)),
            Row("config", "s", 64.0, "head.kwargs.scale"),
            Row("config", "m", 0.5, "head.kwargs.margin"),
            Row("config", "beta", 0.5, "head.kwargs.beta"),
            Row("config", "network", "iresnet50", "model.backbone"),
            Row("config", "num_epoch", 34, "train.epochs"),
            Row("config", "warmup_epoch", -1, "schedule.warmup_epochs", lambda v: max(v, 0)),
            Row("config", "val_targets", ["lfw", "cfp_fp", "agedb_30"], "eval.names", eval_names),
            Row("config", "eval_step", 958, "eval.every"),
            Row("config", "lr_func", [20, 28, 32], "schedule.milestones", lambda v: [m - 1 for m in v]),
            Row("train", "alpha", 10.0, "head.kwargs.alpha"),
            Row("train", "criterion_qs(ccs / nnccs, qs)", "CCS / NNCCS", "head.kwargs.cr_target", is_("code")),
            Row("train", "iresnet50(dropout=0.4, qs=1)", 0.4, "model.kwargs.dropout"),
            Row("train", "iresnet50(dropout=0.4, qs=1)", "qs", "model.kwargs.quality_branch", is_("cr_fiqa")),
            Row("train", "clip_grad_norm_(backbone.parameters(), max_norm=5)", 5.0, "train.grad_clip"),
            Row("train", "clip_grad_norm_(backbone.parameters(), max_norm=5)", "backbone", "train.grad_clip_over"),
            Row("train", "SGD backbone and header, weight_decay", "every parameter", "optim.no_decay", is_("none")),
            Row("train", "no autocast / GradScaler", False, "train.precision", fp16),
            Row("run", "--nproc_per_node=4", 4, "header.processes"),
            Row("iresnet", "nn.Dropout on the flattened map", "element", "model.kwargs.dropout_kind"),
            Row("iresnet", "features weight never frozen", True, "model.kwargs.features_weight_trainable"),
            Row("iresnet", "BatchNorm eps", 1e-5, "built.backbone.bn1.eps"),
            Row("iresnet", "conv init normal_(0, 0.1)", "normal", "model.kwargs.conv_init"),
            Row("losses", "cos_theta.acos_() + m, cos_ with autograd", "exact", "built.head.grad"),
            Row("losses", "no theta + m > pi branch", "none", "built.head.fallback"),
            Row("train", "MXFaceDataset transform (dataset.py)", "RandomHorizontalFlip", "data.augment", is_("flip")),
        ],
        {
            "dataset": "data.path (CASIA-WebFace)",
            "output": "train.out_dir",
            "global_step": "a new run starts at 0",
            "rec": "data.path",
            "num_classes": "taken from the data",
            "num_image": "taken from the data",
        },
        keys_from=("config",),
    ),
    "casia_lresnet50eir_unitsface": Recipe(
        {
            "train": (UTS, "train.py", "301bf04f107db31ee38dee24e937d913b84d910d"),
            "backbone": (UTS, "backbone.py", "12d660ff9a51f65458e33ba417161e0027d04478"),
            "head": (UTS, "head.py", "ef76de8d472de722826ad93596148ec4b8fe0c4f"),
            "dataset": (UTS, "dataset.py", "3c3d1d557d9d058f8d19addf569b95d53a54031d"),
        },
        [
            Row("train", "fp16", True, "train.precision", fp16),
            Row("train", "base_lr", 0.1, "optim.lr"),
            Row("train", "momentum", 0.9, "optim.momentum"),
            Row("train", "weight_decay", 5e-4, "optim.weight_decay"),
            Row("train", "gamma", 0.1, "schedule.gamma"),
            Row("train", "img_size", [112, 112], "built.backbone.input_hw", list),
            Row("train", "train_batch_size", 128, "data.batch_size"),
            Row("train", "bs_mult", 4, "header.processes"),
            Row("train", "steps", [16, 24], "schedule.milestones"),
            Row("train", "epochs", 28, "train.epochs"),
            Row("train", "warmups", 0, "schedule.warmup_epochs"),
            Row("train", "display", 100.0, "train.log_every", int),
            Row("train", "workers", 2, "data.num_workers"),
            Row("train", "model_name", "LResNet50EIR", "model.backbone", str.lower),
            Row("train", "setup_seed(seed=1)", 1, "train.seed"),
            Row("train", "SGD(nesterov=False)", False, "optim.nesterov"),
            Row(
                "train", "SGD: one group per parameter, weight_decay", "every parameter", "optim.no_decay", is_("none")
            ),
            Row("train", "clip_grad_norm_(model.parameters(), max_norm=10.0)", 10.0, "train.grad_clip"),
            Row("train", "clip_grad_norm_(model.parameters(), max_norm=10.0)", "all", "train.grad_clip_over"),
            Row("backbone", "L1 + L2", "sum", "head.kwargs.combine"),
            Row("backbone", "epoch 0: L1 alone", 490_623 // 512, "head.kwargs.uss_warmup_steps"),
            Row("head", "Normalized_Softmax_Loss m", 0.4, "head.kwargs.margin"),
            Row("head", "Normalized_Softmax_Loss s", 64.0, "head.kwargs.scale"),
            Row("head", "Unified_Threshold_Integrated_Sample_to_Sample_Loss m", 0.1, "head.kwargs.margin_uss"),
            Row("head", "Unified_Threshold_Integrated_Sample_to_Sample_Loss s", 64.0, "head.kwargs.gamma"),
            Row("dataset", "transform", "RandomHorizontalFlip", "data.augment", is_("flip")),
        ],
        {
            "cuda": "device: train.device",
            "cudnn": "unused by train.py",
            "visible_devices": "one GPU; see bs_mult",
            "resume": "qualiface train --resume",
            "finetune": "model.init_from (none)",
            "data_path": "data.path",
            "drop_last": "qualiface's sampler yields whole batches",
            "start_epoch": "a new run starts at 0",
            "num_classes": "taken from the data (CASIA-WebFace: 10,572)",
            "model_dir": "train.out_dir",
            "log_dir": "train.out_dir",
        },
        keys_from=("train",),
    ),
    "ms1mv2_ir101_adaface": Recipe(
        {
            "run": (ADA, "scripts/run_ir101_ms1mv2.sh", "7f0dbbf2ba0ec68e48005151434d1926da70b11c"),
            "config": (ADA, "config.py", "7f0dbbf2ba0ec68e48005151434d1926da70b11c"),
            "main": (ADA, "main.py", "72481ff708e112d24d6e20a0df638ea9e0331888"),
            "train_val": (ADA, "train_val.py", "9507e0abeb4092c06798252f9efc059511cc9e64"),
        },
        [
            Row("run", "use_mxrecord", True, "data.source", lambda v: "recordio" if v else "image_folder"),
            Row("run", "gpus", 2, "header.processes"),
            Row("run", "use_16bit", True, "train.precision", fp16),
            Row("run", "arch", "ir_101", "model.backbone"),
            Row("run", "batch_size", 512, "data.batch_size", per_process(2)),
            Row("run", "epochs", 26, "train.epochs"),
            Row("run", "lr_milestones", "12,20,24", "schedule.milestones", lambda v: [int(m) for m in v.split(",")]),
            Row("run", "lr", 0.1, "optim.lr"),
            Row("run", "head", "adaface", "head.name"),
            Row("run", "m", 0.4, "head.kwargs.margin"),
            Row("run", "h", 0.333, "head.kwargs.h"),
            Row("run", "low_res_augmentation_prob", 0.2, "data.augment_p"),
            Row("run", "crop_augmentation_prob", 0.2, "data.augment_p"),
            Row("run", "photometric_augmentation_prob", 0.2, "data.augment_p"),
            Row("run", "low_res/crop/photometric augmentations", "AdaFace's", "data.augment", is_("adaface")),
            Row("config", "seed (default)", 42, "train.seed"),
            Row("config", "momentum (default)", 0.9, "optim.momentum"),
            Row("config", "s (default)", 64.0, "head.kwargs.scale"),
            Row("config", "t_alpha (default)", 0.01, "head.kwargs.t_alpha"),
            Row("config", "lr_gamma (default)", 0.1, "schedule.gamma"),
            Row("train_val", "SGD weight_decay (hard-coded)", 5e-4, "optim.weight_decay"),
            Row("train_val", "BatchNorm parameters without weight decay", "norm", "optim.no_decay"),
            Row("train_val", "MultiStepLR", "step", "schedule.name"),
            Row("main", "pl.Trainer without gradient_clip_val", None, "train.grad_clip"),
        ],
        {
            "data_root": "data.path",
            "train_data_path": "data.path (faces_emore = MS1MV2)",
            "val_data_path": "evaluation data",
            "prefix": "train.out_dir",
            "use_wandb": "logging",
            "num_workers": "data loading speed",
        },
        keys_from=("run",),
    ),
    "ms1mv3_r50_scaleface_finetune": Recipe(
        {
            "config": (SCF, "configs/scale/fine_tune.yaml", "8be015e2b15344a987180351f089346591267d83"),
            "train": (SCF, "trainers/train_scale.py", "b478b821beaa1532c95b05a718a77329faa00ec2"),
            "run": (SCF, "scripts/train/scale/fine_tune.sh", "8be015e2b15344a987180351f089346591267d83"),
        },
        [
            Row("config", "backbone.name", "iresnet50_normalized", "model.backbone", lambda v: v.split("_")[0]),
            Row("config", "scale_predictor.name", "MLPHead", "model.kwargs.quality_branch", is_("scaleface")),
            Row("config", "scale_predictor.num_feats", [25088, 512, 1], "built.backbone.scale_dims", list),
            Row("config", "scale_predictor.batch_norm", True, "built.backbone.scale_batch_norm"),
            Row("config", "scale_predictor.activation", "exp", "model.kwargs.scale_activation"),
            Row("config", "scale_predictor.fp16", True, "train.precision", fp16),
            Row("config", "loss", "arcface_scale", "head.name", is_("scaleface")),
            Row("config", "embedding_size", 512, "built.backbone.embedding_dim"),
            Row("config", "sample_rate", 1.0, "head.sample_rate"),
            Row("config", "fp16", True, "train.precision", fp16),
            Row("config", "momentum", 0.9, "optim.momentum"),
            Row("config", "weight_decay", 5e-4, "optim.weight_decay"),
            Row("config", "batch_size", 128, "data.batch_size"),
            Row("config", "lr", 1e-4, "optim.lr", scaled_lr(128, 4)),
            Row("config", "scale_lr", 1e-4, "optim.lr", scaled_lr(128, 4)),
            Row("config", "freeze_backbone", True, "model.freeze_backbone"),
            Row("config", "num_epoch", 12, "train.epochs"),
            Row("config", "warmup_epoch", -1, "schedule.warmup_epochs", lambda v: max(v, 0)),
            Row("config", "decay_epoch", [3, 6, 9], "schedule.milestones"),
            Row("train", "PFC parameters requires_grad False with a frozen backbone", True, "head.freeze_centres"),
            Row("train", "clip_grad_norm_(learnable_parameters, max_norm=5)", 5.0, "train.grad_clip"),
            Row("train", "learnable_parameters: the scale predictor", "backbone", "train.grad_clip_over"),
            Row("train", "ArcFaceScale margin", 0.5, "head.kwargs.margin"),
            Row("run", "--nproc_per_node=4", 4, "header.processes"),
        ],
        {
            "title": "a name",
            "backbone.learnable": "sets an attribute and freezes nothing (freeze_backbone freezes)",
            "is_distributed": "qualiface runs one process or torchrun",
            "resume": "the trained backbone and centres: model.init_from",
            "source": "the trained backbone and centres: model.init_from",
            "scale_source": "a scale predictor to start from (none)",
            "output": "train.out_dir",
            "dataset": "data.path (MS1MV3)",
            "rec": "data.path",
            "num_classes": "taken from the data (or model.init_from)",
            "num_image": "taken from the data",
            "val_targets": "the backbone is frozen: its verification accuracy does not change",
        },
        keys_from=("config",),
    ),
}


# ----------------------------------------------------------------------------------------------------- helpers

HEADER_OFFICIAL = re.compile(r"^# official: (\S+/\S+) (\S+) @ ([0-9a-f]{40})$")


def header(name: str) -> list[str]:
    lines = []
    for line in (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def header_processes(lines: list[str]) -> tuple[int, int]:
    gpus = [m for line in lines if (m := re.match(r"^# GPUs: (\d+) processes x (\d+) images", line))]
    assert len(gpus) == 1, "the header states the process count once: '# GPUs: N processes x B images'"
    return int(gpus[0].group(1)), int(gpus[0].group(2))


def built(cfg: ExperimentConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    with torch.device("meta"):
        backbone = qualiface.create_backbone(cfg.model.backbone, **cfg.model.kwargs)
        head = qualiface.create_head(
            cfg.head.name, embedding_dim=backbone.embedding_dim, num_classes=10, **cfg.head.kwargs
        )
    return backbone, head


def derived(backbone: torch.nn.Module, key: str) -> Any:
    """Facts of a built backbone that are not a plain attribute path."""
    if key == "features.weight_rg":
        return backbone.features.weight.requires_grad
    if key == "dropout.kind":
        return type(backbone.dropout).__name__
    if key == "input_hw":
        return list(backbone.preprocessing.input_size[1:])
    mlp = backbone.scale_predictor.mlp
    if key == "scale_dims":
        return [backbone.bottleneck_dim, mlp[0].out_features, mlp[-1].out_features]
    if key == "scale_batch_norm":
        return isinstance(mlp[1], torch.nn.BatchNorm1d)
    raise KeyError(key)


def value_at(cfg: ExperimentConfig, name: str, path: str) -> Any:
    first, _, rest = path.partition(".")
    if first == "header":
        processes, batch = header_processes(header(name))
        return {"processes": processes, "batch": batch}[rest]
    if path == "eval.names":
        return [Path(s.path or "").stem for s in cfg.eval.sets]
    if first == "built":
        backbone, head = built(cfg)
        which, _, attr = rest.partition(".")
        obj: Any = backbone if which == "backbone" else head
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            return derived(backbone, attr)
        return obj
    obj = cfg
    for part in path.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)  # a missing key fails the test
    return obj


# ------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_equals_the_official_values(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    wrong = []
    for row in RECIPES[name].rows:
        want = row.how(row.value)
        if row.path is None:
            if want is not True:
                wrong.append(f"{row.key}: official {row.value!r} is not what qualiface does")
            continue
        got = value_at(cfg, name, row.path)
        if isinstance(want, float) or isinstance(got, float):
            ok = got is not None and want is not None and abs(float(got) - float(want)) <= 1e-12 * abs(float(want))
        else:
            ok = got == want
        if not ok:
            wrong.append(f"{row.key} = {row.value!r} -> {row.path}: want {want!r}, got {got!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_header_names_each_official_file_and_commit(name):
    lines = header(name)
    recipe = RECIPES[name]
    named = [m.groups() for line in lines if (m := HEADER_OFFICIAL.match(line))]
    assert [line for line in lines if line.startswith("# official:")] == [
        line for line in lines if HEADER_OFFICIAL.match(line)
    ], "an '# official:' line is not '<owner/repo> <path> @ <40-hex commit>'"
    assert lines[: len(named)] == [f"# official: {r} {p} @ {c}" for r, p, c in named], "the header opens with them"
    assert sorted(named) == sorted(recipe.official.values())
    variants = [line for line in lines if line.startswith("# variant of:")]
    if recipe.variant_of:
        assert len(variants) == 1
        assert recipe.variant_of in variants[0]
    else:
        assert not variants
    assert any(line.startswith("# Reproduces") for line in lines)
    assert any(line.startswith("# Deviations:") for line in lines)
    _, batch = header_processes(lines)
    assert batch == load_config(CONFIGS / f"{name}.yaml").data.batch_size


def test_every_recipe_has_a_table():
    files = {p.stem for p in CONFIGS.glob("*.yaml")}
    others = {"synthetic_tiny"} | {f for f in files if f.startswith("wf42m_") and "vit" in f}  # the ViT recipes' own
    assert files - others == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_builds_and_trains_one_head_step(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    backbone, _ = built(cfg)  # every backbone option accepted, at full size, without allocating
    assert backbone.embedding_dim == 512
    torch.manual_seed(0)
    kwargs = dict(cfg.head.kwargs)
    head = qualiface.create_head(cfg.head.name, embedding_dim=8, num_classes=6, sample_rate=1.0, **kwargs)
    embeddings = (20 * torch.randn(12, 8)).requires_grad_(True)
    labels = torch.arange(12) % 6
    aux = {"quality": torch.randn(12), "scale": 1 + 30 * torch.rand(12, 1)}
    extra = {k: v for k, v in aux.items() if k in head.requires}
    for _ in range(2):  # UniTSFace: the second step has a memory
        loss = head(embeddings, labels, **extra).loss
        loss.backward()
    assert torch.isfinite(loss)
    assert embeddings.grad is not None
    assert bool(embeddings.grad.abs().sum() > 0)


def official_keys(repo: str, path: str, text: str) -> set[str]:
    """The keys an official file sets: ``config.x =`` / ``self.x =`` (Python), ``--x`` (shell), YAML keys."""
    if path.endswith(".sh"):
        return set(re.findall(r"--([A-Za-z][\w-]*)", text)) - {"nproc_per_node", "nnodes", "node_rank"}
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
        return {
            f"{k}.{s}" if isinstance(v, dict) else k
            for k, v in data.items()
            for s in (v if isinstance(v, dict) else [k])
        }
    return set(re.findall(r"^\s*(?:config|self)\.(\w+)\s*=", text, flags=re.MULTILINE))


def mirror(repo: str) -> Path:
    directory = MIRRORS / repo.replace("/", "+") / "repo"
    if not directory.is_dir():
        pytest.skip(
            f"the official repositories are not mirrored here ({directory} is absent; set QUALIFACE_OFFICIAL_MIRRORS)"
        )
    return directory


def git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_commits_and_keys_match_the_mirrors(name):
    recipe = RECIPES[name]
    for source, (repo, path, commit) in recipe.official.items():
        directory = mirror(repo)
        assert git(directory, "log", "-1", "--format=%H", "--", path).strip() == commit, f"{repo} {path}"
        if source not in recipe.keys_from:
            continue
        keys = official_keys(repo, path, git(directory, "show", f"HEAD:{path}"))
        covered = {r.key for r in recipe.rows} | set(recipe.no_effect)
        if source == "run" and path.endswith(".sh"):
            covered |= {r.key for r in recipe.rows if r.source == "run"}
        missing = sorted(keys - covered)
        assert not missing, f"{repo} {path}: keys without a row or a no-effect reason: {missing}"
