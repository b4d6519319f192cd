"""The training loop's bookkeeping after each step and at the end of a run, as an ordered list of callbacks.

:meth:`Trainer.run <qualiface.train.loop.Trainer.run>` steps the optimizer and hands a :class:`LoopState` to
every :class:`TrainerCallback` of :func:`loop_callbacks`, in list order, on every rank (the collective ones,
evaluation, checkpoints and the export, need every rank). The order is part of the behaviour:

after a step
    0. :class:`SkipSummary`: the images the batch skipped (``data.on_error: skip``) are counted;
    1. :class:`LogAggregation`: running means of the step's values; at a log step (every ``train.log_every``
       steps and the last) they become the row (``step``, ``epoch``, ``lr``, the means, ``images_per_s``),
       and the progress bar shows the loss;
    2. :class:`PeriodicEvaluation`: every ``eval.every`` steps (not the last) the verification figures join
       the row;
    3. :class:`MetricsLogging`: a non-empty row goes to ``metrics.csv`` (and TensorBoard) on rank 0, and its
       non-evaluation entries become ``TrainResult.last_metrics``;
    4. :class:`PeriodicCheckpoint`: every ``train.checkpoint_every`` steps (not the last) a checkpoint, after the
       evaluation;
    5. :class:`UserCallbacks`: the functions given to :func:`~qualiface.train.loop.train`, called as
       ``callback(trainer, step, row)``;

at the end of the run
    0. :class:`SkipSummary`: the skipped images of every rank, summed, logged and written to ``run.json`` (first,
       so that the summary is there whatever the export does);
    6. :class:`PeriodicCheckpoint`: a checkpoint at the last step unless one was just written;
    7. :class:`FinalEvaluation`: the verification sets (``eval.sets``) once more, logged;
    0. :class:`SkipSummary`: the skipped images of every rank, summed, logged and written to ``run.json`` (first,
       so that the summary is there whatever the export does);
    6. ...

:meth:`TrainerCallback.close` runs in list order when the run ends, normally or not (the progress bar, then the
metrics log).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from qualiface.atomic import atomic_path
from qualiface.data.image_folder import Skipped
from qualiface.imaging import failure_kind
from qualiface.train.distributed import DistInfo, barrier

if TYPE_CHECKING:
    from qualiface.train.loop import Trainer, TrainResult

logger = logging.getLogger(__name__)

#: A user-facing callback, called as ``callback(trainer, step, logged_row)`` after every step (``logged_row`` is
#: empty at the steps that log nothing).
Callback = Callable[["Trainer", int, dict[str, float]], None]


@dataclass
class LoopState:
    """What the callbacks share: the trainer, the result being filled, and the step just taken.

    Attributes:
        trainer: the run.
        result: the :class:`~qualiface.train.loop.TrainResult` the callbacks fill in.
        lr: the learning rate the step used (read before it).
        values: the step's loss, head logs and gradient norm (detached).
        row: what this step logs (empty at the steps that log nothing); the callbacks add to it in order.
        skipped: the items this rank's batch skipped (``data.on_error: skip``).
    """

    trainer: Trainer
    result: TrainResult
    lr: float = 0.0
    values: dict[str, Tensor] = field(default_factory=dict)
    row: dict[str, float] = field(default_factory=dict)
    skipped: Sequence[Skipped] = ()

    def begin_step(
        self,
        lr: float,
        loss: Tensor,
        logs: dict[str, Tensor],
        grad_norm: Tensor | None,
        *,
        skipped: Sequence[Skipped] = (),
    ) -> None:
        """Record a step that was just taken (and the images its batch skipped); its row starts empty."""
        self.skipped = skipped
        self.lr = lr
        self.values = {"loss": loss, **logs}
        if grad_norm is not None:
            self.values["grad_norm"] = grad_norm
        self.row = {}


class TrainerCallback:
    """One part of the loop's bookkeeping; every hook is a no-op unless a subclass overrides it."""

    def on_step_end(self, state: LoopState) -> None:
        """After every optimizer step (``state.trainer.step`` is the number of steps taken)."""

    def on_train_end(self, state: LoopState) -> None:
        """Once, after the last step (also when the run had no step left to take)."""

    def close(self) -> None:
        """When the run ends, normally or by an exception."""


class LogAggregation(TrainerCallback):
    """Running means of the step values between log steps, the progress bar, and the row of a log step."""

    def __init__(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        cfg = trainer.cfg
        self.bar = tqdm(
            total=trainer.total_steps,
            initial=trainer.step,
            disable=not (trainer.info.is_main and cfg.log.progress),
            desc=f"train {cfg.head.name}",
            unit="step",
            dynamic_ncols=True,
        )
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.tick = time.perf_counter()

    def on_step_end(self, state: LoopState) -> None:
        trainer = state.trainer
        cfg = trainer.cfg
        for key, value in state.values.items():  # summed on the device in float64: read only at a log step
            total = self.sums.get(key)
            value64 = torch.as_tensor(value).detach().to(torch.float64)
            self.sums[key] = value64 if total is None else total + value64
        self.count += 1
        self.bar.update(1)
        if trainer.step % cfg.train.log_every == 0 or trainer.step == trainer.total_steps:
            count = self.count
            means = {k: float(v) / count for k, v in self.sums.items()}  # waits for the device: before the clock
            elapsed = time.perf_counter() - self.tick
            state.row = {
                "step": trainer.step,
                "epoch": trainer.step / trainer.steps_per_epoch,
                "lr": state.lr,
                **means,
                "images_per_s": count * cfg.data.batch_size * trainer.info.world_size / max(elapsed, 1e-9),
            }
            self.bar.set_postfix(loss=f"{state.row['loss']:.3f}", lr=f"{state.lr:.3g}")
            self.sums, self.count, self.tick = {}, 0, time.perf_counter()

    def close(self) -> None:
        self.bar.close()


class PeriodicEvaluation(TrainerCallback):
    """Every ``eval.every`` steps before the last: the verification figures join the step's row (collective)."""

    def on_step_end(self, state: LoopState) -> None:
        trainer = state.trainer
        every = trainer.cfg.eval.every
        if every and trainer.step % every == 0 and trainer.step < trainer.total_steps:
            state.row = {"step": trainer.step, **state.row, **trainer.evaluate()}


class MetricsLogging(TrainerCallback):
    """A non-empty row to ``metrics.csv`` / TensorBoard (rank 0) and to ``TrainResult.last_metrics``; closes the
    trainer's metrics log at the end."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_step_end(self, state: LoopState) -> None:
        row = state.row
        if row and state.trainer.log is not None:
            state.trainer.log.log(row)
        if row:
            state.result.last_metrics = {k: v for k, v in row.items() if not k.startswith("eval/")}

    def close(self) -> None:
        if self.trainer.log is not None:
            self.trainer.log.close()


class PeriodicCheckpoint(TrainerCallback):
    """Every ``train.checkpoint_every`` steps before the last, and at the last step unless one was just written
    (collective); the latter is ``TrainResult.checkpoint``."""

    def on_step_end(self, state: LoopState) -> None:
        trainer = state.trainer
        if trainer.step % trainer.cfg.train.checkpoint_every == 0 and trainer.step < trainer.total_steps:
            trainer.save()

    def on_train_end(self, state: LoopState) -> None:
        trainer = state.trainer
        state.result.checkpoint = (
            trainer.save()
            if trainer.last_checkpoint is None or trainer.step != _step_of(trainer.last_checkpoint)
            else trainer.last_checkpoint
        )


class UserCallbacks(TrainerCallback):
    """The functions given to :func:`~qualiface.train.loop.train`: ``callback(trainer, step, row)`` per step."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_step_end(self, state: LoopState) -> None:
        for callback in self.callbacks:
            callback(state.trainer, state.trainer.step, state.row)


class FinalEvaluation(TrainerCallback):
    """With ``eval.sets``: evaluate the final backbone (collective), log it, and keep it as
    ``TrainResult.eval_metrics``."""

    def on_train_end(self, state: LoopState) -> None:
        trainer = state.trainer
        if trainer.cfg.eval.sets:
            state.result.eval_metrics = trainer.evaluate()
            if trainer.log is not None and state.result.eval_metrics:
                trainer.log.log({"step": trainer.step, **state.result.eval_metrics})


class FinalExport(TrainerCallback):
    """``run_dir/model.pt`` (written by rank 0, collective) as ``TrainResult.model_path``, then a barrier."""

    def on_train_end(self, state: LoopState) -> None:
        state.result.model_path = state.trainer.export()
        barrier(state.trainer.info)


class SkipSummary(TrainerCallback):
    """The items skipped under ``data.on_error: skip``: those left out when the source was built, then those each
    batch skipped, on every rank (whichever DataLoader worker met them). At the end the ranks' lists are summed
    (collective), logged by rank 0 and written to ``run.json`` as ``"skipped": {"count", "by_reason", "items"}``
    (the first :attr:`MAX_ITEMS` items in full) and to ``TrainResult.skipped``."""

    MAX_ITEMS = 1000

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self.items: list[Skipped] = []
        construction = getattr(trainer.samples.source.dataset, "skipped", ())
        self._add(list(construction) if trainer.info.is_main else [])

    def _add(self, skipped: Sequence[Skipped]) -> None:
        for item in skipped:
            self.count += 1
            self.by_reason[failure_kind(item.reason)] += 1
            if len(self.items) < self.MAX_ITEMS:
                self.items.append(item)

    def on_step_end(self, state: LoopState) -> None:
        self._add(state.skipped)

    def on_train_end(self, state: LoopState) -> None:
        trainer = self.trainer
        mine = (self.count, dict(self.by_reason), [(s.what, s.reason) for s in self.items])
        ranks = _gather(mine, trainer.info)
        if not trainer.info.is_main:
            return
        count = sum(r[0] for r in ranks)
        by_reason: Counter[str] = Counter()
        for r in ranks:
            by_reason.update(r[1])
        items = [{"what": what, "reason": reason} for r in ranks for what, reason in r[2]][: self.MAX_ITEMS]
        summary = {"count": count, "by_reason": dict(by_reason.most_common()), "items": items}
        state.result.skipped = summary
        if count:
            reasons = ", ".join(f"{n} {kind}" for kind, n in by_reason.most_common())
            logger.warning("skipped %d images (data.on_error: skip): %s; listed in run.json", count, reasons)
        path = trainer.layout.run_json
        if path.is_file():
            described = json.loads(path.read_text())
            described["skipped"] = summary
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(described, indent=2) + "\n")


def _gather(obj: object, info: DistInfo) -> list[Any]:
    """``obj`` of every rank, in rank order (collective; ``[obj]`` in one process)."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def loop_callbacks(trainer: Trainer, callbacks: Sequence[Callback] = ()) -> list[TrainerCallback]:
    """The loop's bookkeeping in its order (see the module docstring), ``callbacks`` after the checkpoint."""
    skips = SkipSummary(trainer)
    return [
        skips,
        LogAggregation(trainer),
        PeriodicEvaluation(),
        MetricsLogging(trainer),
        PeriodicCheckpoint(),
        UserCallbacks(callbacks),
        FinalEvaluation(),
        FinalExport(),
    ]


def _step_of(folder: Path) -> int:
    return int(folder.name.split("_")[-1])
