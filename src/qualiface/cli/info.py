"""``qualiface info MODEL``: the model card (what the model is, how it preprocesses, its quality and thresholds,
the SHA-256 of its weights, where it comes from)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import PreprocessingOption, open_model


@app.command("info")
def info(
    model: Annotated[
        str | None, typer.Argument(help="Model file, run directory, checkpoint folder or ONNX recognizer.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
    formats: Annotated[bool, typer.Option("--formats", help="List the model formats qualiface reads.")] = False,
    fmt: Annotated[
        str | None, typer.Option("--model-format", help="Read MODEL as this format (see --formats).")
    ] = None,
    preprocessing: PreprocessingOption = None,
) -> None:
    """Print a model's card; with --formats, the formats qualiface reads."""
    if formats:
        from qualiface.models.formats import format_names, get_format

        for name in format_names():
            fmt_class = get_format(name)
            aliases = f" (also: {', '.join(fmt_class.aliases)})" if fmt_class.aliases else ""
            typer.echo(f"{name:12s} {fmt_class.description}{aliases}")
        return
    if model is None:
        raise typer.BadParameter("give a MODEL (or --formats)")
    card = open_model(model, preprocessing=preprocessing, fmt=fmt, quiet=True, describe_only=True).card
    if as_json:
        typer.echo(json.dumps(card.to_dict(), indent=2, allow_nan=False))
    else:
        typer.echo(card.summary())
