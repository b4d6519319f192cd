"""``qualiface demo``: train a small quality-aware model on synthetic faces, evaluate it, write a report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app


@app.command("demo")
def demo_command(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Demo folder; the training run goes to OUT/run, the report to OUT/report."),
    ] = Path("runs/demo"),
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps (default 500; 3 with --quick).")] = None,
    quick: Annotated[bool, typer.Option(help="A seconds-long smoke run on a handful of identities.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the training progress bar.")] = True,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="PyTorch CPU threads (default: one per core; 1 can be faster on a busy machine)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set optim.lr=0.05.")
    ] = None,
) -> None:
    """Train an iResNet-18 with CR-FIQA's quality head on built-in synthetic faces with known degradations (a few
    minutes on 2 CPU cores), evaluate verification and the quality EDC on held-out identities, and write a report
    folder (config.yaml, metrics.json, roc.png, edc.png, summary.md)."""
    from qualiface.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # errors: one line, exit 2 for the input (a bad --set), 1 for a run that could not finish (cli.apps)
    result = run_demo(out, steps=steps, quick=quick, progress=progress, overrides=list(set_ or []), threads=threads)
    for line in result.summary_lines():
        typer.echo(line)
    typer.echo(f"report: {result.report_dir}")
    typer.echo(f"summary: {result.summary_path}")


@app.command("tour")
def tour_command(
    steps: Annotated[int, typer.Option(min=1, help="Training steps per head.")] = 40,
) -> None:
    """A seconds-long tour: the registered backbones and quality methods, and every head trained for a few steps
    on toy vectors of synthetic identities (first and last loss)."""
    from qualiface.tour import run_tour, tour_header

    for line in tour_header(steps):
        typer.echo(line)
    for step in run_tour(steps):
        typer.echo(f"  {step.head:<10} loss {step.first_loss:8.3f} -> {step.last_loss:8.3f}   ({step.seconds:.1f} s)")
