"""Under torchrun with NCCL, more processes than CUDA devices is one clear line before any process group starts
(NCCL itself refuses two ranks on one GPU only after a long wait)."""

from __future__ import annotations

import pytest
import torch

from qualiface.train import distributed
from qualiface.train.distributed import setup_distributed


@pytest.fixture
def one_gpu_second_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed, "guard_rank", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def no_device(*args: object) -> None:
        raise AssertionError("a CUDA device was selected before the check")

    monkeypatch.setattr(torch.cuda, "set_device", no_device)
    monkeypatch.setattr(distributed.dist, "init_process_group", no_device)


@pytest.mark.usefixtures("one_gpu_second_rank")
@pytest.mark.parametrize("backend", ["auto", "nccl"])
def test_more_ranks_than_gpus_under_nccl_is_refused(backend: str) -> None:
    with pytest.raises(ValueError, match=r"LOCAL_RANK 1, but this machine has 1 CUDA device\(s\): start at most 1"):
        setup_distributed(backend, "auto")


@pytest.mark.usefixtures("one_gpu_second_rank")
def test_gloo_may_share_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: chosen.append(a[0]))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    info = setup_distributed("gloo", "auto")
    assert info.device == torch.device("cuda", 0)
    assert chosen == [torch.device("cuda", 0), "gloo"]
