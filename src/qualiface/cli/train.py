"""``qualiface train CONFIG.yaml [--set key=value ...]``: config-driven training, one process or torchrun."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app


@app.command("train")
def train_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/); sections model, head, data, ...")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key, e.g. --set train.steps=100 --set head.kwargs.margin=0.3."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory, a folder (overrides train.out_dir).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint in the run dir.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a previous run in the run dir (refused without it, or --resume).")
    ] = False,
    print_config: Annotated[bool, typer.Option(help="Print the resolved config and exit.")] = False,
) -> None:
    """Train a backbone and head as CONFIG says. Under torchrun every process runs this same command:

    torchrun --nproc_per_node 2 -m qualiface.cli train CONFIG.yaml
    """
    from qualiface.config import dump_config, load_config

    overrides = list(set_ or [])
    if out_dir is not None:
        overrides.append(f"train.out_dir={out_dir}")
    cfg = load_config(config, overrides)
    if print_config:
        typer.echo(dump_config(cfg), nl=False)
        return
    rank = int(os.environ.get("RANK", "0") or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(message)s")
    from qualiface.train import train

    result = train(cfg, resume=resume, overwrite=overwrite)  # errors: one line, exit 2 or 1 (cli.apps)
    if rank == 0:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.eval_metrics.items())
        typer.echo(
            f"trained {result.step} steps in {result.precision}; run directory {result.run_dir}"
            + (f"; {metrics}" if metrics else "")
        )
        if result.model_path is not None:
            typer.echo(f"model: {result.model_path}")
