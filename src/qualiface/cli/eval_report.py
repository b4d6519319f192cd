"""``qualiface eval report``: one Markdown or HTML report from the output folders of other ``eval`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.cli.apps import eval_app
from qualiface.cli.outputs import OverwriteOption, refuse_existing_file


def _scalars(values: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            out.update(_scalars(value, f"{prefix}{key}."))
    elif not isinstance(values, list):
        out[prefix.rstrip(".")] = values
    return out


def folder_section(folder: Path) -> Any:
    """A report section for one result folder: the scalars of its JSON files and its PNG plots."""
    from qualiface.eval.report import Section

    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ValueError(f"{folder}: no result JSON files (run a 'qualiface eval' command with --out {folder})")
    summary = folder / "summary.json"
    metrics: dict[str, Any] = {}
    for path in [summary] if summary.is_file() else files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        name = "" if len(files) == 1 or path == summary else f"{path.stem}."
        metrics.update(_scalars(data, name))
    return Section(folder.name, metrics, sorted(folder.glob("*.png")))


@eval_app.command("report")
def report(
    folders: Annotated[list[Path], typer.Argument(help="Output folders of 'qualiface eval verify/ijb/identify/edc'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="report.md (Markdown) or report.html (HTML).")] = Path(
        "report.md"
    ),
    title: Annotated[str, typer.Option(help="Report title.")] = "qualiface evaluation report",
    overwrite: OverwriteOption = False,
) -> None:
    """One report that puts the metrics and plots of several evaluation folders together."""
    from qualiface.eval.report import write_report

    refuse_existing_file(out, overwrite)
    sections = [folder_section(folder) for folder in folders]
    typer.echo(f"wrote {write_report(sections, out, title=title)}")
