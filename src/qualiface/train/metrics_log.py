"""Training logs: ``metrics.csv`` (one row per logged step, a column per metric) and TensorBoard events.

New metric names (an evaluation that starts later, say) widen the CSV: the file is rewritten with the larger
header, atomically, so it always parses with one header line.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from qualiface.atomic import atomic_path
from qualiface.run_layout import RunLayout

logger = logging.getLogger(__name__)


class MetricsLog:
    """Append rows of ``{name: number}`` to ``run_dir/metrics.csv`` and, optionally, TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = False, resume_step: int | None = None) -> None:
        self.path = RunLayout(Path(run_dir)).metrics_csv
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                self.rows = [r for r in reader if r.get("step") and int(float(r["step"])) <= resume_step]
            self._rewrite()
        self.writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "log.tensorboard needs the tensorboard package: pip install 'qualiface[tensorboard]'"
                ) from exc
            self.writer = SummaryWriter(log_dir=str(RunLayout(Path(run_dir)).tensorboard), purge_step=resume_step)

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_path(self.path, fsync=False) as tmp:
            tmp.write_text(buffer.getvalue())

    def log(self, row: dict[str, Any]) -> None:
        """Write one row (must contain ``step``)."""
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        new = [k for k in row if k not in self.columns]
        self.rows.append(row)
        if new or not self.path.is_file():
            self.columns += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.columns, lineterminator="\n").writerow(row)
        if self.writer is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float | str):
                    try:
                        self.writer.add_scalar(key, float(value), step)
                    except ValueError:
                        continue
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
