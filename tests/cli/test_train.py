"""``qualiface train``: the shipped tiny config trains, writes a model, and config errors exit non-zero."""

from pathlib import Path

import torch
from typer.testing import CliRunner

from qualiface.cli.app import app

TINY = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
runner = CliRunner()


def test_help() -> None:
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "--set" in result.output


def test_train_the_tiny_config_for_two_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(TINY), "--set", "train.steps=2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["step"] == 2
    assert (out / "checkpoints" / "step_00000002" / "COMPLETE").is_file()
    again = runner.invoke(app, ["train", str(TINY), "--set", "train.steps=3", "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert torch.load(out / "model.pt", weights_only=True)["step"] == 3


def test_training_into_a_finished_run_is_refused_without_resume_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(TINY), "--set", "train.steps=1", "--out", str(out)]).exit_code == 0
    model = (out / "model.pt").read_bytes()
    again = runner.invoke(app, ["train", str(TINY), "--set", "train.steps=2", "--out", str(out)])
    assert again.exit_code == 2  # the user's input (the run directory) is refused
    assert "holds a run already" in again.output
    assert "--overwrite" in again.output
    assert "Traceback" not in again.output
    assert (out / "model.pt").read_bytes() == model
    replaced = runner.invoke(app, ["train", str(TINY), "--set", "train.steps=2", "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert torch.load(out / "model.pt", weights_only=True)["step"] == 2


def test_an_unknown_key_fails_with_a_hint() -> None:
    result = runner.invoke(app, ["train", str(TINY), "--set", "optim.lrr=0.1"])
    assert result.exit_code == 2
    assert "unknown key 'optim.lrr'; did you mean 'lr'?" in result.output


def test_resume_without_checkpoint_fails_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(TINY), "--out", str(tmp_path / "empty"), "--resume"])
    assert result.exit_code == 2  # the input (--resume without a checkpoint) is refused
    assert "no complete checkpoint" in result.output


def test_print_config_shows_the_resolved_values() -> None:
    result = runner.invoke(app, ["train", str(TINY), "--set", "head.name=magface", "--print-config"])
    assert result.exit_code == 0
    assert "name: magface" in result.output


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resumable(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC while writing step 2's checkpoint: before, an OSError traceback; now exit 1, one line naming the last
    complete checkpoint, which a --resume continues from."""
    import errno

    from qualiface.train import checkpoint as ckpt

    out = tmp_path / "run"
    real = ckpt.atomic_save
    calls = []

    def full_disk(obj, path):
        calls.append(path)
        if "step_00000002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path)

    monkeypatch.setattr(ckpt, "atomic_save", full_disk)
    args = ["train", str(TINY), "--set", "train.steps=3", "--set", "train.checkpoint_every=1", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "No space left on device" in result.output
    assert f"the last complete checkpoint is {out / 'checkpoints' / 'step_00000001'}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    monkeypatch.setattr(ckpt, "atomic_save", real)
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(out / "model.pt", weights_only=True)["step"] == 3
