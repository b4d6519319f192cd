"""``python -m qualiface`` is the command line; the short tour is ``qualiface tour``."""

from __future__ import annotations

import subprocess
import sys

import qualiface
from qualiface.tour import run_tour


def _module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qualiface", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_python_dash_m_runs_the_command_line() -> None:
    result = _module("--help")
    assert result.returncode == 0, result.stderr
    for command in ("embed", "verify", "tour", "eval", "data"):
        assert command in result.stdout
    bad = _module("no-such-command")
    assert bad.returncode == 2
    assert "no-such-command" in bad.stderr


def test_tour_command_trains_every_head() -> None:
    result = _module("tour", "--steps", "3")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if " loss " in line]
    assert sorted(parts[0] for parts in lines) == sorted(qualiface.list_heads())


def test_run_tour_lowers_every_loss() -> None:
    steps = list(run_tour(40))
    assert [s.head for s in steps] == list(qualiface.list_heads())
    for step in steps:
        assert step.last_loss < step.first_loss, step
