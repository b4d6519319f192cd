"""The multi-process test helper really runs gloo processes and reports failures."""

import pytest
import torch

from _helpers._ddp_selfcheck import all_reduce_rank, fail_on_rank_one
from _helpers.ddp import run_distributed

pytestmark = pytest.mark.ddp


def test_all_reduce_over_two_processes() -> None:
    results = run_distributed(all_reduce_rank, 2, 0.5)
    assert [int(r["rank"]) for r in results] == [0, 1]
    for r in results:
        torch.testing.assert_close(r["sum"], torch.tensor([2.0]))


def test_a_failing_rank_raises_with_its_traceback() -> None:
    with pytest.raises(RuntimeError, match="rank one fails on purpose"):
        run_distributed(fail_on_rank_one, 2)
