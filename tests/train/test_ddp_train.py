"""Two gloo processes train exactly like one process on the same global batch, with sharded class centres."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers.ddp import free_port, run_distributed
from _helpers.ddp_train_workers import ddp_config, run_rank, run_rank_sampled
from qualiface.config import config_from_dict
from qualiface.train import train

pytestmark = pytest.mark.ddp


@pytest.mark.parametrize("head", ["arcface", "cr_fiqa", "unitsface"])
def test_two_processes_equal_one_process(tmp_path: Path, head: str) -> None:
    steps = 4
    two = run_distributed(run_rank, 2, str(tmp_path / "two"), head, 4, steps)
    one_cfg = config_from_dict(ddp_config(str(tmp_path / "one"), head, 8, steps))
    train(one_cfg)
    one = torch.load(tmp_path / "one" / "checkpoints" / f"step_{steps:08d}" / "rank0.pt", weights_only=True)
    one_losses = [float(line.split(",")[3]) for line in (tmp_path / "one" / "metrics.csv").read_text().splitlines()[1:]]

    torch.testing.assert_close(torch.tensor(two[0]["losses"]), torch.tensor(one_losses), rtol=1e-5, atol=1e-5)
    for rank in range(2):
        for key, value in one["backbone"].items():
            torch.testing.assert_close(two[rank]["backbone"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert two[0]["head"]["weight"].shape[0] == 4  # 7 classes: 4 on rank 0, 3 on rank 1
    sharded = torch.cat([two[0]["head"]["weight"], two[1]["head"]["weight"]])
    torch.testing.assert_close(sharded, one["head"]["weight"], rtol=1e-5, atol=1e-6)
    for key, value in one["head"].items():
        if key in ("weight", "feat_mem", "seen"):
            continue
        for rank in range(2):  # replicated state (UniTSFace bias and step count) agrees on every rank
            torch.testing.assert_close(two[rank]["head"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    if head == "unitsface":
        memory = torch.cat([two[0]["head"]["feat_mem"], two[1]["head"]["feat_mem"]])
        torch.testing.assert_close(memory, one["head"]["feat_mem"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["cosface", "adaface"])
def test_partial_fc_sampling_across_two_processes(tmp_path: Path, head: str) -> None:
    ranks = run_distributed(run_rank_sampled, 2, str(tmp_path / "run"), head, 3)
    assert len(ranks[0]["losses"]) == 3
    assert all(torch.isfinite(torch.tensor(ranks[0]["losses"])))
    assert ranks[0]["head"]["weight"].shape[0] == ranks[1]["head"]["weight"].shape[0] == 6  # 12 classes over 2
    for key, value in ranks[0]["backbone"].items():  # DDP keeps the replicas identical
        torch.testing.assert_close(ranks[1]["backbone"][key], value, rtol=0, atol=0, msg=key)
    for key in ("batch_mean", "batch_std"):  # AdaFace: the EMA of the global batch, the same on both ranks
        if key in ranks[0]["head"]:
            torch.testing.assert_close(ranks[1]["head"][key], ranks[0]["head"][key], rtol=0, atol=0)


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun is not installed next to this Python",
)
def test_torchrun_runs_the_train_command(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    config = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "qualiface.cli",
        "train",
        str(config),
        "--set",
        "train.steps=2",
        "--set",
        "data.batch_size=8",
        "--set",
        "train.device=cpu",  # two processes on one GPU would share cuda:0 under NCCL
        "--out",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 2 steps" in done.stdout
    folder = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in folder.iterdir()) == ["COMPLETE", "rank0.pt", "rank1.pt"]
    assert (tmp_path / "run" / "model.pt").is_file()
