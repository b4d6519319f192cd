"""Training: config-driven loop for one process or many (torchrun), checkpoints, schedules, logs.

``from qualiface.train import train`` (nothing heavy is imported until it is called). This package is the only
place that initialises a process group.
"""

from qualiface.train.loop import NonFiniteLossError, Trainer, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "train"]
