"""Tiny experiments on the test backbone ``tiny_cnn`` (16x16 synthetic faces), fast enough for every head."""

from pathlib import Path
from typing import Any

import pytest

from _helpers.tiny_backbone import registered
from qualiface.config import ExperimentConfig, config_from_dict


def tiny_config(
    out_dir: Path, *, head: str = "arcface", overrides: tuple[str, ...] = (), **sections: Any
) -> ExperimentConfig:
    branch = {"cr_fiqa": "cr_fiqa", "scaleface": "scaleface"}.get(head)
    data: dict[str, Any] = {
        "model": {
            "backbone": "tiny_cnn",
            "kwargs": {"input_size": 16, **({"quality_branch": branch} if branch else {})},
        },
        "head": {"name": head},
        "data": {
            "synthetic": {"num_identities": 8, "images_per_identity": 4, "size": 16},
            "batch_size": 8,
            "num_workers": 0,
        },
        "optim": {"lr": 0.05},
        # device cpu: on a CUDA machine too these stay CPU checks (tests/gpu holds the CUDA ones)
        "train": {
            "out_dir": str(out_dir),
            "steps": 6,
            "precision": "fp32",
            "device": "cpu",
            "log_every": 1,
            "checkpoint_every": 100,
        },
        "log": {"progress": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data, list(overrides))


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
