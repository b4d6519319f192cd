"""Optimizers with the recipes' weight-decay splits, and per-iteration learning-rate schedules.

Schedules are factors of the base lr as a function of the optimizer step ``t`` (0-based, the lr used for
step ``t``), with ``T`` total steps, ``w`` warm-up steps and ``e = t / steps_per_epoch``:

    warm-up (t < w):  f = t / w                                  (arcface_torch PolynomialLRWarmup)
    poly:             f = (1 − (t − w) / (T − w))^power
    step:             f = γ^(number of milestones m with e ≥ m)   (MultiStepLR / LambdaLR per epoch)
    cosine:           f = r + (1 − r)·(1 + cos(π (t − w) / (T − w))) / 2,  r = min_lr_ratio
    constant:         f = 1
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qualiface.config.schema import OptimConfig, ScheduleConfig

logger = logging.getLogger(__name__)

_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def split_decay(module: nn.Module, no_decay: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decayed, not decayed)`` trainable parameters of ``module`` under the policy ``no_decay``.

    ``none``: every parameter decays (arcface_torch, MagFace, CR-FIQA, UniTSFace). ``norm``: parameters of
    normalisation layers do not (AdaFace: BN weight and bias; PReLU slopes still decay). ``norm_bias``: neither
    do biases.
    """
    if no_decay not in ("none", "norm", "norm_bias"):
        raise ValueError(f"optim.no_decay must be 'none', 'norm' or 'norm_bias', got {no_decay!r}")
    skip: set[int] = set()
    if no_decay != "none":
        for layer in module.modules():
            if isinstance(layer, _NORM_LAYERS):
                skip.update(id(p) for p in layer.parameters(recurse=False))
        if no_decay == "norm_bias":
            skip.update(id(p) for name, p in module.named_parameters() if name.endswith("bias"))
    decay: list[nn.Parameter] = []
    keep: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (keep if id(p) in skip else decay).append(p)
    return decay, keep


def group_settings(cfg: OptimConfig, group: str) -> dict[str, Any]:
    """The hyperparameters of the parameter group named ``group`` (``backbone``, ``backbone_no_decay``, ``head``,
    ``head_no_decay``) under ``cfg``: the base ``lr``, ``weight_decay`` and the optimizer's own (SGD momentum and
    Nesterov, AdamW betas)."""
    head = group.startswith("head")
    lr = cfg.head_lr if head and cfg.head_lr is not None else cfg.lr
    decay = cfg.head_weight_decay if head and cfg.head_weight_decay is not None else cfg.weight_decay
    settings: dict[str, Any] = {"lr": lr, "weight_decay": 0.0 if group.endswith("_no_decay") else decay}
    if cfg.name == "sgd":
        settings.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    elif cfg.name == "adamw":
        if len(cfg.betas) != 2:
            raise ValueError(f"optim.betas needs two values, got {cfg.betas}")
        settings["betas"] = (cfg.betas[0], cfg.betas[1])
    else:
        raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {cfg.name!r}")
    return settings


def build_optimizer(cfg: OptimConfig, backbone: nn.Module, head: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over four groups: backbone (decay / no decay) and head (decay / no decay)."""
    groups = []
    for name, module in (("backbone", backbone), ("head", head)):
        decay, keep = split_decay(module, cfg.no_decay)
        for group, params in ((name, decay), (name + "_no_decay", keep)):
            if params:
                groups.append({"params": params, "name": group, **group_settings(cfg, group)})
    if not groups:
        raise ValueError("nothing to train: no parameter requires a gradient")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]))


def apply_optim_config(cfg: OptimConfig, optimizer: torch.optim.Optimizer) -> None:
    """Set every group's hyperparameters to ``cfg`` (a resumed run whose config changed them); the optimizer's
    state (momentum buffers, AdamW moments and step counts) is kept. ``lr`` becomes the group's base lr:
    :func:`build_scheduler` then sets the lr of the step."""
    for group in optimizer.param_groups:
        group.update(group_settings(cfg, group["name"]))


def total_steps(steps: int | None, epochs: float | None, steps_per_epoch: int) -> int:
    """The run's length in optimizer steps: ``train.steps``, else ``train.epochs`` times ``steps_per_epoch``
    rounded down (at least one step)."""
    if steps is not None:
        return steps
    return max(1, math.floor((epochs or 1.0) * steps_per_epoch))


def lr_factor(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The schedule as ``step -> factor of the base lr`` (see the module docstring)."""
    warmup = int(cfg.warmup_steps + round(cfg.warmup_epochs * steps_per_epoch))
    if warmup < 0:
        raise ValueError(f"the warm-up must not be negative, got {warmup} steps")
    if warmup >= total_steps:
        logger.warning("the warm-up (%d steps) covers the whole run (%d steps)", warmup, total_steps)
    milestones = sorted(float(m) for m in cfg.milestones)
    if cfg.name == "step" and not milestones:
        raise ValueError("schedule.name 'step' needs schedule.milestones (epochs)")
    if cfg.name not in ("poly", "step", "cosine", "constant"):
        raise ValueError(f"unknown schedule {cfg.name!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            epoch = step / steps_per_epoch
            return cfg.gamma ** sum(epoch >= m for m in milestones)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.name == "poly":
            return (1.0 - progress) ** cfg.power
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` (call ``step()`` after every optimizer step) at ``step``: every group's lr
    becomes ``base · factor(step)``, its base lr being the group's ``lr`` now (a resumed run sets it with
    :func:`apply_optim_config` first)."""
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg, total_steps, steps_per_epoch), last_epoch=step - 1
    )
