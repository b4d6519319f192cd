"""Shared fixtures: two threads, deterministic seeds; long fuzz runs only when selected."""

import re

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``fuzz`` (thousands of Hypothesis examples) run only when ``-m`` selects them, e.g.
    ``python -m pytest -m fuzz``; the default run skips them with that reason (their short variants run)."""
    if re.search(r"(?<!not )\bfuzz\b", config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: select it with -m fuzz")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)
