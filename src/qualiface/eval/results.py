"""Plain-data export shared by every evaluation result: ``to_dict()``, JSON and CSV."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.atomic import atomic_path


def to_plain(value: Any) -> Any:
    """Recursively turn NumPy / torch values into JSON-ready Python values (NaN and inf become ``None``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [to_plain(v) for v in value.tolist()] if value.dtype.kind in "fc" else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flat_scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalar entries of nested mappings as ``{"outer.inner": value}``; lists are left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_scalars(value, f"{name}."))
        elif not isinstance(value, list | tuple):
            out[name] = value
    return out


class Result:
    """Mixin for evaluation results (dataclasses): ``to_dict()``, :meth:`to_json`, :meth:`to_csv`.

    ``rows()`` gives the table written to CSV; by default one row of the scalar fields. Results with
    curves override it to return one row per curve point.
    """

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain Python values (lists for arrays)."""
        plain: dict[str, Any] = to_plain(self)
        return plain

    def report_metrics(self) -> dict[str, Any]:
        """The scalars a report shows (:func:`flat_scalars` of :meth:`to_dict`); results whose values need a word
        (a rate the sample cannot measure, a NaN) override it to put that word in the cell."""
        return flat_scalars(self.to_dict())

    def rows(self) -> list[dict[str, Any]]:
        """Rows for CSV export."""
        plain = self.to_dict()
        return [{k: v for k, v in plain.items() if not isinstance(v, list | dict)}]

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically: a reader sees the old file or the whole new one); returns
        the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2)
        with atomic_path(path, fsync=False) as tmp:
            tmp.write_text(text)
        return path

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`rows` as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_path(path, fsync=False) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        return path
