"""Where a training run keeps its files: the one place that knows the run-directory layout.

::

    run_dir/config.yaml                       the resolved experiment config
    run_dir/run.json                          world size, device, precision, sizes
    run_dir/metrics.csv                       one row per logged step
    run_dir/model.pt                          the trained model (weights + model card), see qualiface.models.model_file
    run_dir/checkpoints/step_00000100/        one folder per checkpoint: rank0.pt, rank1.pt, ..., COMPLETE
    run_dir/tensorboard/                      TensorBoard events (log.tensorboard)
    run_dir/calibration.qualiface.json        a calibrated threshold of model.pt (qualiface calibrate)

The trainer writes through it, the loader and ``model.init_from`` read through it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class RunLayout:
    """The files of the run in ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def model_file(self) -> Path:
        return self.root / "model.pt"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def run_files(self) -> list[Path]:
        """The files and folders of a run that exist in ``root``: what a new run there would overwrite."""
        from qualiface.models.calibration import calibration_path

        known = [self.model_file, self.config, self.run_json, self.metrics_csv, self.checkpoints, self.tensorboard]
        return [path for path in (*known, calibration_path(self.root)) if path.exists() or path.is_symlink()]

    def remove_run_files(self) -> list[Path]:
        """Delete :meth:`run_files` (nothing else in ``root``); returns what was removed."""
        removed = self.run_files()
        for path in removed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return removed

    def stale_files(self) -> list[Path]:
        """What a killed run leaves behind: unfinished checkpoint folders (``step_*.partial``) and the temporary
        files of interrupted atomic writes (``.<name>.tmp-*``), in ``root`` and in the checkpoint folders."""
        from qualiface.atomic import TMP_PATTERN

        found = sorted(self.root.glob(TMP_PATTERN)) if self.root.is_dir() else []
        if self.checkpoints.is_dir():
            found += sorted(self.checkpoints.glob("step_*.partial"))
            found += sorted(self.checkpoints.glob(f"step_*/{TMP_PATTERN}"))
        return found

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:08d}"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoint folders, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for entry in self.checkpoints.iterdir():
            match = _STEP_DIR.match(entry.name)
            if match and is_checkpoint_dir(entry):
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or ``None``."""
        done = self.list_checkpoints()
        return done[-1][1] if done else None

    def is_run(self) -> bool:
        """Whether ``root`` looks like a run directory (a model file or a checkpoints folder)."""
        return self.model_file.is_file() or self.checkpoints.is_dir()


def is_checkpoint_dir(path: Path) -> bool:
    """A complete checkpoint folder: ``rank*.pt`` files and the ``COMPLETE`` marker."""
    return (path / COMPLETE_MARKER).is_file() and any(path.glob("rank*.pt"))


def rank_files(folder: Path) -> list[Path]:
    """``rank0.pt``, ``rank1.pt``, ... of a checkpoint folder, in rank order."""
    files = [p for p in folder.glob("rank*.pt") if p.stem[4:].isdigit()]
    return sorted(files, key=lambda p: int(p.stem[4:]))
