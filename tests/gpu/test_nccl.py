"""Two CUDA processes over NCCL train exactly like one CUDA process on the same global batch (class centres
sharded over the ranks), as tests/train/test_ddp_train.py checks for gloo on the CPU.

The ranks run float32 without TF32 (``gpu_workers.run_rank_cuda``); the two runs then differ by the order of the
sums of a batch of 4 against one of 8 and of the NCCL reductions: ``rtol = 1e-4`` on the losses and weights of
4 steps (the gloo test, with identical CPU kernels, holds 1e-5).
"""

from pathlib import Path

import pytest
import torch

from _helpers.ddp import run_distributed
from _helpers.gpu_workers import run_rank_cuda

pytestmark = [pytest.mark.gpu, pytest.mark.ddp]

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True)
def _two_devices() -> None:
    count = torch.cuda.device_count()
    if count < 2:
        pytest.skip(f"a 2-process NCCL run needs 2 CUDA devices, this machine has {count}")


@pytest.mark.parametrize("head", ["arcface", "unitsface"])
def test_two_nccl_processes_equal_one_cuda_process(tmp_path: Path, head: str) -> None:
    steps = 4
    two = run_distributed(run_rank_cuda, 2, str(tmp_path / "two"), head, 4, steps)
    one = run_distributed(run_rank_cuda, 1, str(tmp_path / "one"), head, 8, steps)[0]
    assert [rank["backend"] for rank in two] == ["nccl", "nccl"]
    assert [rank["device"] for rank in two] == ["cuda:0", "cuda:1"]
    assert one["backend"] is None  # one process: no process group
    assert two[0]["step"] == two[1]["step"] == one["step"] == steps
    torch.testing.assert_close(torch.tensor(two[0]["losses"]), torch.tensor(one["losses"]), rtol=RTOL, atol=ATOL)
    for rank in range(2):
        for key, value in one["backbone"].items():
            torch.testing.assert_close(
                two[rank]["backbone"][key], value, rtol=RTOL, atol=ATOL, msg=f"rank {rank}: {key}"
            )
    assert two[0]["head"]["weight"].shape[0] == 4  # 7 classes: 4 on rank 0, 3 on rank 1
    for key in ("weight", "feat_mem"):
        if key in one["head"]:
            sharded = torch.cat([two[0]["head"][key], two[1]["head"][key]])
            torch.testing.assert_close(sharded, one["head"][key], rtol=RTOL, atol=ATOL, msg=key)
