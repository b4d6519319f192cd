"""Tiny experiments on the test backbone ``tiny_cnn`` (16x16 synthetic faces), fast enough for every head."""

from pathlib import Path
from typing import Any

import pytest

from _helpers.tiny_backbone import registered
from _helpers.tiny_training import tiny_config
from qualiface.config import ExperimentConfig


@pytest.fixture(autouse=True)
def _tiny_backbone():
    """``tiny_cnn`` exists during every training test, and only then."""
    with registered():
        yield


@pytest.fixture
def make_config(tmp_path: Path):
    def make(name: str = "run", **kwargs: Any) -> ExperimentConfig:
        return tiny_config(tmp_path / name, **kwargs)

    return make
