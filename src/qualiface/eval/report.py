"""One Markdown or HTML report that puts evaluation results and their plots together."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qualiface.atomic import atomic_path
from qualiface.eval.results import Result, flat_scalars


@dataclass
class Section:
    """A titled part of a report: scalar metrics (a table), images, free text."""

    title: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    images: Sequence[str | Path] = ()
    text: str = ""

    @classmethod
    def from_result(cls, title: str, result: Result, images: Sequence[str | Path] = (), text: str = "") -> Section:
        """A section showing the scalar fields of ``result`` (:meth:`Result.report_metrics`: nested dicts of
        scalars are flattened; a rate the sample cannot measure reads ``n/m (needs ≥ N ...)``, a NaN its reason)."""
        return cls(title, result.report_metrics(), images, text)


_scalars = flat_scalars  # the former private name


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _relative(image: str | Path, out: Path) -> str:
    return Path(os.path.relpath(Path(image).resolve(), out.parent.resolve())).as_posix()


def write_report(sections: Sequence[Section], path: str | Path, *, title: str = "qualiface report") -> Path:
    """Write ``sections`` to ``path``: HTML when it ends in ``.html``, Markdown otherwise. Images are linked by
    relative path, so keep them beside the report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        _html(sections, path, title) if path.suffix.lower() in (".html", ".htm") else _markdown(sections, path, title)
    )
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_text(text)
    return path


def _markdown(sections: Sequence[Section], out: Path, title: str) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {key} | {_fmt(value)} |" for key, value in section.metrics.items()]
            lines.append("")
        lines += [f"![{Path(image).stem}]({_relative(image, out)})" for image in section.images]
        if section.images:
            lines.append("")
    return "\n".join(lines)


def _html(sections: Sequence[Section], out: Path, title: str) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{esc(section.text)}</p>")
        if section.metrics:
            rows = "".join(
                f"<tr><td>{esc(key)}</td><td>{esc(_fmt(value))}</td></tr>" for key, value in section.metrics.items()
            )
            parts.append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
        for image in section.images:
            parts.append(f"<p><img src='{esc(_relative(image, out))}' alt='{esc(Path(image).stem)}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
