"""Resuming a run: what a config that changed since the checkpoint does, and the restore itself.

``qualiface train CONFIG --resume`` continues with the config it is given, which may differ from the one the
checkpoint was written with (``--set optim.lr=0.01``, a longer ``train.steps``, another number of processes).
No difference is ignored: each changed field is either applied, logged at INFO as ``old -> new`` and recorded
in ``run.json`` (``resumes``), or refused with a one-line :class:`~qualiface.train.checkpoint.ResumeRefusedError`
that names it.

Refused
    ``model``, ``head`` and ``data`` (but ``data.num_workers``, ``data.batch_size`` and ``data.on_error``, so
    that a run stopped by an unreadable image continues with ``--set data.on_error=skip``): the weights and the
    samples belong to them. ``optim.name``: one optimizer's state (momentum, AdamW moments) does not carry over
    to another. ``optim.no_decay``: it regroups the parameters. ``train.seed``: the rest of the epoch's order
    and augmentation follow it. A global batch (``data.batch_size`` x processes) other than the checkpoint's:
    the data order and the epochs follow it. A length (``train.steps`` / ``train.epochs``) below the step
    resumed from.
Applied to the restored optimizer
    ``optim.lr``, ``head_lr``, ``weight_decay``, ``head_weight_decay``, ``momentum``, ``nesterov``, ``betas``:
    the parameter groups take the new values, the momentum buffers and moments stay.
Applied to the schedule
    ``schedule.*`` and the length: the schedule is rebuilt for the new config and placed at the resumed step,
    so from that step on the learning rate follows the new curve (a longer poly run continues from the new
    curve's value at the step, not from the old one's).
Applied as the run goes
    everything else (``train.grad_clip``, ``train.grad_clip_over``, ``precision``, logging, checkpoints,
    ``eval``, ...), read from the config when used (the clip set, like the precision, when the trainer starts);
    ``data.batch_size`` with the same global batch on another number of processes (the class
    centres and their optimizer state are resharded, :func:`~qualiface.train.checkpoint.load_rank_state`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qualiface.config.io import to_dict
from qualiface.train import checkpoint as ckpt
from qualiface.train.optim import apply_optim_config, build_scheduler, total_steps

if TYPE_CHECKING:
    from qualiface.train.loop import Trainer

logger = logging.getLogger(__name__)

#: The sections whose change is refused (the weights and samples belong to them), less the fields below.
FIXED_SECTIONS = ("model", "head", "data")
#: Fields of those sections a resumed run may change: they do not change what is computed (the global batch,
#: ``data.batch_size`` x processes, is checked on its own).
#: ``data.on_error``: a run stopped by an unreadable image continues with ``skip`` (only the bad images change).
FREE_FIELDS = frozenset({"data.num_workers", "data.batch_size", "data.on_error"})
#: Fields whose change is refused, and why.
REFUSED = {
    "optim.name": "one optimizer's state (momentum, moments) does not carry over to another; resume with the "
    "checkpoint's optimizer, or start a new run from this one (model.init_from)",
    "optim.no_decay": "it regroups the parameters, whose optimizer state is kept per group; resume with the "
    "checkpoint's value",
    "train.seed": "the rest of the epoch's data order and augmentation follow it (samples would repeat or be "
    "skipped); resume with the checkpoint's value",
}
#: Optimizer fields that one of the two optimizers does not read.
_UNUSED = {"optim.momentum": "adamw", "optim.nesterov": "adamw", "optim.betas": "sgd"}

_UNSET = "<unset>"


@dataclass(frozen=True)
class Change:
    """A config field whose value differs from the checkpoint's."""

    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field} {self.old!r} -> {self.new!r}"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths of the leaves of nested dicts (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """Every field of ``current`` (a config as :func:`~qualiface.config.io.to_dict`) that differs from ``saved``,
    in the order of the current config; a field one side lacks has the value ``'<unset>'`` there."""
    old, new = _flatten(saved), _flatten(current)
    fields = [*new, *(k for k in old if k not in new)]
    return [
        Change(k, old.get(k, _UNSET), new.get(k, _UNSET)) for k in fields if old.get(k, _UNSET) != new.get(k, _UNSET)
    ]


def refuse_changes(changes: list[Change], folder: Path, saved_config: Path) -> None:
    """Raise :class:`~qualiface.train.checkpoint.ResumeRefusedError` for the first change a resume cannot apply."""
    fixed = [c for c in changes if c.field.split(".")[0] in FIXED_SECTIONS and c.field not in FREE_FIELDS]
    if fixed:
        sections = sorted({c.field.split(".")[0] for c in fixed})
        raise ckpt.ResumeRefusedError(
            f"{folder}: the config sections {sections} differ from the checkpoint's ({fixed[0]}); resume with the "
            f"saved {saved_config}"
        )
    for change in changes:
        if change.field in REFUSED:
            raise ckpt.ResumeRefusedError(f"{folder}: {change} on resume is refused: {REFUSED[change.field]}")


def check_global_batch(folder: Path, saved_batch: int, saved_world: int, batch: int, world: int) -> None:
    """The global batch (images per step over every process) must be the checkpoint's."""
    expected = saved_batch * saved_world
    if batch * world == expected:
        return
    fix = (
        f"set data.batch_size={expected // world}"
        if expected % world == 0
        else f"use a number of processes that divides {expected}"
    )
    raise ckpt.ResumeRefusedError(
        f"{folder}: data.batch_size {batch} x {world} process(es) = {batch * world} images per step, but the "
        f"checkpoint was trained with {saved_batch} x {saved_world} = {expected}; the data order and the epochs "
        f"follow the global batch: {fix}"
    )


def check_length(folder: Path, length: int, step: int, field: str) -> None:
    """The run must not end before the step it resumes from."""
    if length < step:
        raise ckpt.ResumeRefusedError(
            f"{folder}: {field} gives {length} steps, fewer than the checkpoint's step {step}; set train.steps to "
            f"{step} or more"
        )


def read_resumes(run_json: Path) -> list[dict[str, Any]]:
    """The ``resumes`` recorded in a run's ``run.json`` (none when it is missing or unreadable)."""
    try:
        previous = json.loads(run_json.read_text(encoding="utf-8")).get("resumes", [])
    except (OSError, ValueError, AttributeError):
        return []
    return previous if isinstance(previous, list) else []


def resume_run(trainer: Trainer) -> dict[str, Any]:
    """Restore ``trainer`` from the newest complete checkpoint of its run, with its config's changes applied
    or refused (module docstring), on any number of processes; returns the record of this resume."""
    cfg, info = trainer.cfg, trainer.info
    folder = ckpt.latest_checkpoint(trainer.run_dir)
    if folder is None:
        raise ckpt.ResumeRefusedError(
            f"{trainer.layout.checkpoints}: no complete checkpoint to resume from; start without --resume"
        )
    saved, saved_world = ckpt.read_checkpoint_config(folder)
    changes = config_changes(saved, to_dict(cfg))
    refuse_changes(changes, folder, trainer.layout.config)
    check_global_batch(folder, int(saved["data"]["batch_size"]), saved_world, cfg.data.batch_size, info.world_size)

    state = ckpt.load_rank_state(folder, info, class_rows(trainer))
    step = int(state["step"])
    check_length(folder, trainer.total_steps, step, "train.steps" if cfg.train.steps is not None else "train.epochs")
    trainer.backbone.load_state_dict(state["backbone"])
    trainer.head.load_state_dict(state["head"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    restored = [group["lr"] for group in trainer.optimizer.param_groups]
    apply_optim_config(cfg.optim, trainer.optimizer)
    trainer.scheduler = build_scheduler(
        cfg.schedule, trainer.optimizer, trainer.total_steps, trainer.steps_per_epoch, step
    )
    if trainer.scaler is not None and state.get("scaler") is not None:
        trainer.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    trainer.step = step
    trainer.last_checkpoint = folder
    old_length = total_steps(saved["train"].get("steps"), saved["train"].get("epochs"), trainer.steps_per_epoch)
    return _report(trainer, folder, saved_world, changes, old_length, restored)


def _report(
    trainer: Trainer, folder: Path, saved_world: int, changes: list[Change], old_length: int, restored: list[float]
) -> dict[str, Any]:
    """Log what the resume applied (INFO) and return its record for ``run.json``."""
    step, world = trainer.step, trainer.info.world_size
    logger.info("resumed from %s at step %d", folder, step)
    record: dict[str, Any] = {"step": step, "checkpoint": str(folder), "processes": [saved_world, world]}
    if saved_world != world:
        logger.info("resume: the class centres of %d process(es) resharded over %d", saved_world, world)
    for change in changes:
        unused = _UNUSED.get(change.field) == trainer.cfg.optim.name
        logger.info("resume at step %d: %s%s", step, change, " (not read by this optimizer)" if unused else "")
    record["changes"] = {c.field: [c.old, c.new] for c in changes}
    if old_length != trainer.total_steps:
        logger.info("resume at step %d: the run's length %d -> %d steps", step, old_length, trainer.total_steps)
        record["total_steps"] = [old_length, trainer.total_steps]
    groups = trainer.optimizer.param_groups
    lrs = {g["name"]: [old, g["lr"]] for g, old in zip(groups, restored, strict=True) if old != g["lr"]}
    if lrs:
        text = ", ".join(f"{name} {old:.6g} -> {new:.6g}" for name, (old, new) in lrs.items())
        logger.info("resume at step %d: the learning rate follows the new config from this step: %s", step, text)
        record["lr"] = lrs
    return record


def class_rows(trainer: Trainer) -> ckpt.ClassRows:
    """Which entries of the trainer's state are split by class over the processes (for resharding)."""
    head = trainer.head
    names = {id(param): name for name, param in head.named_parameters()}
    params = [param for group in trainer.optimizer.param_groups for param in group["params"]]
    optimizer = {
        index: names[id(param)]
        for index, param in enumerate(params)  # the indices of Optimizer.state_dict
        if names.get(id(param)) in head.class_rows
    }
    return ckpt.ClassRows(head.num_classes, frozenset(head.class_rows), optimizer)
