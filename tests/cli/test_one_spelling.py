"""One spelling per option across the commands (docs/cli.md, 'One spelling per option')."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command

from qualiface.cli.app import app

#: Spellings that other commands used for the same thing, and the one kept.
RENAMED = {
    "--labels-key": "--label-key",
    "--features-key": "--feature-key",
    "--flip-embeddings": "--flipped",
    "--fusion": "--flip-fusion",
    "--out-dir": "--out",
    "--output": "--out",
    "--no-aligned": "--detect",
    "--no-all-faces": "--largest",
    "--no-detect": "--aligned",
}
#: Options whose short form is the same everywhere they appear.
SHORT = {"--out": "-o", "--model": "-m"}


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(_commands(get_command(app)))


def _options(command: Any) -> list[list[str]]:
    return [list(p.opts) for p in command.params if p.param_type_name == "option"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_uses_a_retired_spelling(name: str) -> None:
    spelled = {
        opt for p in COMMANDS[name].params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)
    }
    retired = sorted(spelled & set(RENAMED))
    assert not retired, f"qualiface {name}: {retired} -> {[RENAMED[r] for r in retired]}"


def test_format_is_always_an_output_format() -> None:
    """``--format`` says how a command writes (csv / ofiq, png / jpg); ``info`` reads MODEL with --model-format."""
    assert "--format" not in {opt for opts in _options(COMMANDS["info"]) for opt in opts}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_shared_options_have_the_same_short_form(name: str) -> None:
    for opts in _options(COMMANDS[name]):
        for long, short in SHORT.items():
            if long in opts:
                assert short in opts, f"qualiface {name}: {long} without {short}"


def test_every_command_is_in_the_docs_table() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    missing = [name for name in COMMANDS if f"`qualiface {name}`" not in text]
    assert not missing, missing


#: Commands whose --out may be replaced without asking: the demo rewrites its own folder on every run.
REWRITES_ITS_OUT = {"demo"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_with_out_has_overwrite(name: str) -> None:
    spelled = {opt for opts in _options(COMMANDS[name]) for opt in opts}
    if "--out" in spelled and name not in REWRITES_ITS_OUT:
        assert "--overwrite" in spelled, f"qualiface {name}: --out without --overwrite"
