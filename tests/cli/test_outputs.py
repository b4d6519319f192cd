"""One rule for an output an earlier run left (cli/outputs.py): refused, untouched, unless --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.errors import EXIT_INPUT

runner = CliRunner()

IDENTIFY = ["eval", "identify", "--gallery", "{tmp}/g.npz", "--probe", "{tmp}/p.npz", "-o", "{out}"]


@pytest.mark.parametrize(
    ("command", "out_name", "marker"),
    [
        (["embed", "{tmp}/a.png", "-m", "{tmp}/no-model.onnx", "-o", "{out}"], "faces.npz", ""),
        (IDENTIFY, "out", "identification.json"),
        (["eval", "ijb", "{tmp}/f.npy", "{tmp}/meta", "-o", "{out}"], "out", "ijb_11.json"),
        (["eval", "report", "{tmp}/runs", "-o", "{out}"], "report.md", ""),
    ],
    ids=["embed", "eval identify", "eval ijb", "eval report"],
)
def test_an_earlier_output_is_refused_and_left_as_it_was(
    tmp_path: Path, command: list[str], out_name: str, marker: str
) -> None:
    out = tmp_path / out_name
    earlier = out / marker if marker else out  # a folder command's finished-run file, or the file itself
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text("an earlier run\n")
    args = [a.format(tmp=tmp_path, out=out) for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_INPUT, result.output
    assert result.output.startswith("error: --out "), result.output
    assert "--overwrite" in result.output
    assert earlier.read_text() == "an earlier run\n"
    replaced = runner.invoke(app, [*args, "--overwrite"])  # now refused for its real reason: the missing input
    assert replaced.exit_code == EXIT_INPUT
    assert "--overwrite" not in replaced.output
