"""The training loop's bookkeeping after each step and at the end of a run, as an ordered list of callbacks.

:meth:`Trainer.run <qualiface.train.loop.Trainer.run>` steps the optimizer and hands a :class:`LoopState` to
every :class:`TrainerCallback` of :func:`loop_callbacks`, in list order, on every rank (the collective ones,
evaluation, checkpoints and the export, need every rank). The order is part of the behaviour:

after a step
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
    6. :class:`PeriodicCheckpoint`: a checkpoint at the last step unless one was just written;
    7. :class:`FinalEvaluation`: the verification sets (``eval.sets``) once more, logged;
    8. :class:`FinalExport`: ``model.pt`` (rank 0), then a barrier.

:meth:`TrainerCallback.close` runs in list order when the run ends, normally or not (the progress bar, then the
metrics log).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from qualiface.train.distributed import barrier

if TYPE_CHECKING:
    from qualiface.train.loop import Trainer, TrainResult

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
    """

    trainer: Trainer
    result: TrainResult
    lr: float = 0.0
    values: dict[str, Tensor] = field(default_factory=dict)
    row: dict[str, float] = field(default_factory=dict)

    def begin_step(self, lr: float, loss: Tensor, logs: dict[str, Tensor], grad_norm: Tensor | None) -> None:
        """Record a step that was just taken; its row starts empty."""
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


def loop_callbacks(trainer: Trainer, callbacks: Sequence[Callback] = ()) -> list[TrainerCallback]:
    """The loop's bookkeeping in its order (see the module docstring), ``callbacks`` after the checkpoint."""
    return [
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
