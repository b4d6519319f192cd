"""The extension examples of docs/extending.md run against the library as written (the docs cannot drift from the API).

Each module-level example (a python block that registers something) is executed as it stands in the page, its
component is used once, and the registration is removed afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import qualiface
from qualiface.registry import BACKBONES, HEADS, MODEL_FORMATS, QUALITY, QUALITY_BRANCHES, Registry

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _blocks(section: str) -> list[str]:
    """The ``python`` blocks of one ``## section`` of the page, in order."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@contextmanager
def _executed(section: str, index: int, registry: Registry[Any], name: str) -> Iterator[dict[str, Any]]:
    assert name not in registry, f"{name} is registered before the example ran"
    namespace: dict[str, Any] = {"__name__": f"docs_example_{name}"}
    exec(compile(_blocks(section)[index], f"{PAGE}:{section}", "exec"), namespace)
    try:
        assert name in registry
        yield namespace
    finally:
        registry.unregister(name)


def test_the_head_example_is_arcface_when_m1_is_1_and_m3_is_0():
    with _executed("Adding a head", 0, HEADS, "combined_margin"):
        torch.manual_seed(0)
        combined = qualiface.create_head("combined_margin", 8, 5, m1=1.0, m2=0.5, m3=0.0)
        arcface = qualiface.create_head("arcface", 8, 5, margin=0.5, fallback="none")
        arcface.load_state_dict(combined.state_dict())
        emb, labels = torch.randn(6, 8), torch.arange(6) % 5
        torch.testing.assert_close(combined(emb, labels).loss, arcface(emb, labels).loss)


def test_the_format_example_detects_and_loads_its_checkpoints(tmp_path):
    with _executed("Adding a checkpoint format", 0, MODEL_FORMATS, "my_trainer"):
        backbone = qualiface.create_backbone("iresnet18", input_size=32)
        state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
        state["head.weight"] = torch.randn(3, backbone.embedding_dim)
        path = tmp_path / "epoch_20.pt"
        torch.save({"state_dict": state}, path)
        model = qualiface.load_model(path)
        assert model.card.source_format == "my_trainer"
        assert (model.preprocessing.channel_order, model.preprocessing.mean) == ("RGB", (0.5, 0.5, 0.5))


def test_the_quality_branch_example_is_trained_by_cr_fiqa():
    with (
        _executed("Adding a quality branch", 0, QUALITY_BRANCHES, "mlp_qs"),
        _executed("Adding a quality branch", 2, QUALITY, "mlp_qs"),
    ):
        backbone = qualiface.create_backbone("iresnet18", input_size=32, quality_branch="mlp_qs", qs_hidden=16)
        embeddings, aux = backbone.forward_aux(torch.randn(2, 3, 32, 32))
        assert set(aux) == {"quality"}
        head = qualiface.create_head("cr_fiqa", embedding_dim=backbone.embedding_dim, num_classes=4)
        head(embeddings, torch.tensor([0, 1]), **aux).loss.backward()
        assert backbone.mlp_qs[0].weight.grad is not None


@pytest.mark.parametrize("branch", [None, "scaleface", "cr_fiqa"])
def test_the_backbone_example_builds_with_every_branch(branch):
    with _executed("Adding a backbone", 0, BACKBONES, "plaincnn_s"):
        backbone = qualiface.create_backbone("plaincnn_s", input_size=32, quality_branch=branch).eval()
        embeddings, aux = backbone.forward_aux(torch.randn(2, 3, 32, 32))
        assert embeddings.shape == (2, 512)
        assert len(aux) == (branch is not None)
