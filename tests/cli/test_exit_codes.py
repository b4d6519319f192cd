"""One exit-code scheme for every command (qualiface.cli.apps): the user's input 2, a run that could not finish 1,
one ``error:`` line and no traceback; a bug still shows its traceback."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _helpers.hostile import png_claiming
from qualiface.cli.app import app
from qualiface.cli.apps import exit_for
from qualiface.config import ConfigError
from qualiface.data.image_folder import ImageDataError
from qualiface.errors import EXIT_FAILED, EXIT_INPUT, InputError, RunError
from qualiface.imaging import ImageDecodeError
from qualiface.train import NonFiniteLossError

TINY = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
runner = CliRunner()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InputError("x"), EXIT_INPUT),
        (ConfigError("x"), EXIT_INPUT),
        (ImageDataError("x"), EXIT_INPUT),
        (ImageDecodeError("a.png", "truncated"), EXIT_INPUT),
        (ValueError("x"), EXIT_INPUT),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "a.yaml"), EXIT_INPUT),
        (PermissionError(errno.EACCES, "Permission denied", "faces/id1"), EXIT_INPUT),
        (OSError(errno.ENOSPC, "No space left on device", "run/checkpoints"), EXIT_FAILED),
        (RunError("x"), EXIT_FAILED),
        (NonFiniteLossError("x"), EXIT_FAILED),
    ],
)
def test_the_exit_code_of_each_kind_of_failure(exc: Exception, code: int) -> None:
    verdict = exit_for(exc)
    assert verdict is not None
    assert verdict[0] == code


def test_an_os_error_names_its_file() -> None:
    assert exit_for(OSError(errno.ENOSPC, "No space left on device", "run/model.pt")) == (
        EXIT_FAILED,
        "run/model.pt: No space left on device",
    )


def test_bugs_are_not_dressed_as_user_errors() -> None:
    assert exit_for(KeyError("x")) is None
    assert exit_for(TypeError("x")) is None
    assert exit_for(RuntimeError("x")) is None


def test_an_input_error_deep_in_a_command_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A training folder with a decompression bomb: before, a ValueError from the decoder exited 1 (or escaped)."""
    faces = tmp_path / "faces"
    (faces / "a").mkdir(parents=True)
    (faces / "a" / "bomb.png").write_bytes(png_claiming(30000, 30000))
    options = ["--set", "data.source=image_folder", "--set", f"data.path={faces}", "--set", "data.batch_size=1"]
    result = runner.invoke(app, ["train", str(TINY), *options, "--out", str(tmp_path / "run")])
    assert result.exit_code == EXIT_INPUT, result.output
    assert f"error: {faces / 'a' / 'bomb.png'}: " in result.output
    assert "Traceback" not in result.output


def test_the_installed_command_prints_one_line(tmp_path: Path) -> None:
    """Through the real entry point (not CliRunner): stderr is the one line, the exit code 2."""
    missing = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "qualiface.cli", "train", str(missing)], capture_output=True, text=True, check=False
    )
    assert result.returncode == EXIT_INPUT
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert str(missing) in lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "identify", "--gallery", "{missing}", "--probe", "{missing}", "--out", "{out}"],
        ["eval", "ijb", "{missing}", "{missing}", "--out", "{out}"],
        ["eval", "report", "{missing}", "--out", "{out}/report.md"],
        ["eval", "verify", "--embeddings", "{missing}", "--out", "{out}"],
        ["eval", "edc", "{missing}", "--out", "{out}"],
        ["train", "{missing}"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_command_reports_a_missing_input_the_same_way(tmp_path: Path, command: list[str]) -> None:
    """One format for every command: ``error: ...`` naming the file, exit 2 (some printed ``Error:`` before)."""
    missing = tmp_path / "missing.npy"
    args = [a.format(missing=missing, out=tmp_path / "out", tmp=tmp_path) for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_INPUT, result.output
    assert result.output.startswith("error: "), result.output
    assert "missing.npy" in result.output
    assert "Traceback" not in result.output
