"""Shared fixtures: two threads, deterministic seeds; long fuzz runs and slow real-data checks only when selected;
CUDA checks (marker ``gpu``) wherever CUDA is present."""

import re

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


#: Markers whose tests run only when ``-m`` selects them (the default run stays within about 10 minutes on 2 cores).
OPT_IN = {
    "fuzz": "long fuzz run: select it with -m fuzz",
    "slow": "a check of over ~30 s (real data, the largest exports): select it with -m slow",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``fuzz`` (thousands of Hypothesis examples) or ``slow`` (real-data checks of half a minute or
    more) run only when ``-m`` selects them, e.g. ``python -m pytest -m "slow or fuzz"``; the default run skips them
    with that reason (the fuzz tests' short variants and the fast real-data checks run)."""
    selected = config.getoption("markexpr") or ""
    for marker, reason in OPT_IN.items():
        if re.search(rf"(?<!not )\b{marker}\b", selected):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)
    _skip_gpu_tests_without_cuda(items)


#: Why a ``gpu`` test is skipped on a machine without CUDA (in the default run and under ``-m gpu`` alike).
NO_CUDA = "needs CUDA (torch.cuda.is_available() is False)"


def _skip_gpu_tests_without_cuda(items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run wherever CUDA is available, in the default run as under ``-m gpu`` (they are
    short); without CUDA each is skipped with :data:`NO_CUDA` as its reason, never collected as an error."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in gpu_items:
        item.add_marker(skip)
