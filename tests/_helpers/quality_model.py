"""A qualiface ``model.pt`` with a trained-quality output for the photo-command tests: iresnet18 with CR-FIQA's
quality branch, random weights, in the layout written before model cards existed (still read, its card rebuilt
from the other fields)."""

from __future__ import annotations

from pathlib import Path

import torch

import qualiface


def write_quality_model(path: Path, seed: int = 0) -> Path:
    """Write the model to ``path`` and return it."""
    torch.manual_seed(seed)
    backbone = qualiface.create_backbone("iresnet18", quality_branch="cr_fiqa", embedding_dim=64)
    torch.save(
        {
            "format": "qualiface.model/1",
            "backbone": "iresnet18",
            "backbone_kwargs": {"quality_branch": "cr_fiqa", "embedding_dim": 64},
            "embedding_dim": 64,
            "preprocessing": backbone.preprocessing.to_dict(),
            "state_dict": backbone.state_dict(),
            "head": {"name": "cr_fiqa", "num_classes": 10},
            "head_state": None,
            "step": 1,
        },
        path,
    )
    return path
