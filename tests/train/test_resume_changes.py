"""A resumed run whose config changed applies each change (logged, recorded in run.json) or refuses it in one line;
none is silently ignored."""

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

from qualiface.train import train
from qualiface.train.checkpoint import CheckpointError, latest_checkpoint
from qualiface.train.distributed import DistInfo
from qualiface.train.loop import Trainer
from qualiface.train.optim import lr_factor

ONE_PROCESS = DistInfo(0, 0, 1, torch.device("cpu"))


def _lrs(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return {int(row["step"]): float(row["lr"]) for row in csv.DictReader(fh)}


def test_a_lower_lr_on_resume_is_applied_and_the_momentum_kept(make_config, caplog) -> None:
    first = train(make_config(overrides=("train.steps=2", "schedule.name=constant")))
    folder = latest_checkpoint(first.run_dir)
    assert folder is not None
    saved = torch.load(folder / "rank0.pt", weights_only=True)
    changed = (
        "train.steps=2",
        "schedule.name=constant",
        "optim.lr=0.01",
        "optim.weight_decay=0.001",
        "optim.momentum=0.5",
    )
    with caplog.at_level(logging.INFO, logger="qualiface.train"):
        trainer = Trainer(make_config(overrides=changed), ONE_PROCESS, resume=True)
    assert trainer.step == 2
    for group in trainer.optimizer.param_groups:  # every group: backbone and head (no head_lr)
        assert group["lr"] == 0.01, group["name"]
        assert group["initial_lr"] == 0.01
        assert group["weight_decay"] == 0.001
        assert group["momentum"] == 0.5
    restored = trainer.optimizer.state_dict()["state"]
    for index, entry in saved["optimizer"]["state"].items():  # the momentum buffers carry over unchanged
        assert torch.equal(restored[index]["momentum_buffer"], entry["momentum_buffer"])
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.05  # the checkpoint's lr, no longer used
    for text in ("optim.lr 0.05 -> 0.01", "optim.momentum 0.9 -> 0.5", "optim.weight_decay 0.0005 -> 0.001"):
        assert any(text in r.getMessage() and r.levelno == logging.INFO for r in caplog.records), text
    assert any("backbone 0.05 -> 0.01" in r.getMessage() for r in caplog.records)


def test_a_longer_poly_run_continues_on_the_new_curve(make_config, caplog) -> None:
    first = train(make_config(overrides=("train.steps=4",)))
    assert _lrs(first.run_dir)[4] == pytest.approx(0.05 * 0.25)  # the lr of step index 3 of 4
    longer = make_config(overrides=("train.steps=8",))
    with caplog.at_level(logging.INFO, logger="qualiface.train"):
        trainer = Trainer(longer, ONE_PROCESS, resume=True)
    new_curve = lr_factor(longer.schedule, 8, trainer.steps_per_epoch)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.05 * new_curve(4) == pytest.approx(0.025)  # not 0 (old)
    messages = [r.getMessage() for r in caplog.records]
    assert any("train.steps 4 -> 8" in m for m in messages)
    assert any("the run's length 4 -> 8 steps" in m for m in messages)
    assert any("the learning rate follows the new config from this step: backbone 0 -> 0.025" in m for m in messages)

    result = train(longer, resume=True)
    lrs = _lrs(result.run_dir)
    for step in range(5, 9):  # metrics.csv continues; the lr of each resumed step is the new curve's
        assert lrs[step] == pytest.approx(0.05 * new_curve(step - 1), abs=1e-12)
    record = json.loads((result.run_dir / "run.json").read_text())["resumes"]
    assert record[0]["step"] == 4
    assert record[0]["changes"]["train.steps"] == [4, 8]
    assert record[0]["total_steps"] == [4, 8]
    assert record[0]["lr"]["backbone"] == [0.0, pytest.approx(0.025)]


def test_changes_read_as_the_run_goes_are_accepted_and_logged(make_config, caplog) -> None:
    train(make_config(overrides=("train.steps=2",)))
    changed = make_config(
        overrides=("train.steps=2", "data.num_workers=1", "train.grad_clip=1.0", "data.on_error=skip")
    )
    with caplog.at_level(logging.INFO, logger="qualiface.train"):
        result = train(changed, resume=True)
    messages = [r.getMessage() for r in caplog.records]
    assert any("data.num_workers 0 -> 1" in m for m in messages)
    assert any("train.grad_clip 5.0 -> 1.0" in m for m in messages)
    changes = json.loads((result.run_dir / "run.json").read_text())["resumes"][0]["changes"]
    assert changes == {"data.num_workers": [0, 1], "train.grad_clip": [5.0, 1.0], "data.on_error": ["raise", "skip"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("optim.name=adamw", r"optim\.name 'sgd' -> 'adamw' on resume is refused: one optimizer's state"),
        ("optim.no_decay=norm", r"optim\.no_decay 'none' -> 'norm' on resume is refused: it regroups"),
        ("train.seed=1", r"train\.seed 2048 -> 1 on resume is refused: the rest of the epoch's data order"),
        ("train.steps=1", r"train\.steps gives 1 steps, fewer than the checkpoint's step 2; set train\.steps to 2"),
        ("data.batch_size=4", r"data\.batch_size 4 x 1 process\(es\) = 4 images .* 8 x 1 = 8; .*data\.batch_size=8"),
        ("head.name=cosface", r"\['head'\] differ from the checkpoint's \(head\.name 'arcface' -> 'cosface'\)"),
    ],
)
def test_a_change_that_cannot_carry_over_is_refused_in_one_line(make_config, change: str, message: str) -> None:
    run = train(make_config(overrides=("train.steps=2",)))
    before = {name: (run.run_dir / name).read_bytes() for name in ("metrics.csv", "config.yaml", "run.json")}
    with pytest.raises(CheckpointError, match=message) as error:
        train(make_config(overrides=("train.steps=2", change)), resume=True)
    assert "\n" not in str(error.value)
    assert str(latest_checkpoint(run.run_dir)) in str(error.value)
    assert {name: (run.run_dir / name).read_bytes() for name in before} == before
