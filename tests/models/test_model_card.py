"""The model card, the preprocessing statement, and the quality-branch registry across every backbone family."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import qualiface
from qualiface.backbones.base import Preprocessing
from qualiface.backbones.ir import IR
from qualiface.backbones.iresnet import IResNet
from qualiface.backbones.lresnet import LResNetXEIR
from qualiface.backbones.mobilefacenet import MobileFaceNet
from qualiface.models import FaceModel, ModelCard, ThresholdInfo, export_onnx, export_safetensors, load_model
from qualiface.models.card import CardError, QualityInfo, parse_preprocessing
from qualiface.quality.branches import branch_names, get_branch
from qualiface.registry import BACKBONES

# ------------------------------------------------------------------------------------------------ the card


def _card(**changes) -> ModelCard:
    base = {
        "name": "m",
        "source_format": "qualiface",
        "embedding_dim": 64,
        "preprocessing": Preprocessing(input_size=(3, 32, 32), flip_fusion="sum"),
        "architecture": "iresnet18",
        "architecture_kwargs": {"input_size": 32},
        "quality": (QualityInfo("cr_fiqa", "branch", observed_range=(0.1, 0.9)),),
        "thresholds": (
            ThresholdInfo(0.25, "learned", source="unitsface head"),
            ThresholdInfo(0.31, "calibrated", fmr=1e-3, n_genuine=10, n_impostor=3000, pairs="p.csv"),
        ),
        "weights_sha256": "ab" * 32,
        "provenance": {"step": 3},
        "licence": "Apache-2.0",
    }
    return ModelCard(**{**base, **changes})


def test_card_round_trips_through_json():
    card = _card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.decision_threshold.value == 0.31  # a calibration decides over a learned threshold
    learned_only = _card(thresholds=card.thresholds[:1])
    assert learned_only.decision_threshold is None  # a learned threshold decides only when asked for
    assert learned_only.learned_threshold.value == 0.25
    assert "resize area" in card.summary()
    assert card.stamp()["model_sha256"] == "ab" * 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "qualiface.card/99"}, "card version"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"thresholds": [{"value": float("nan"), "kind": "calibrated"}]}, "finite"),
        ({"thresholds": [{"value": -1e9, "kind": "calibrated"}]}, r"within \[-1, 1\]"),
        ({"thresholds": [{"value": 0.3, "kind": "guessed"}]}, "kind"),
        ({"preprocessing": {"channel_order": "RBG"}}, "channel_order"),
        ({"preprocessing": {"std": [0, 1, 1]}}, "no zero"),
        ({"colour": "blue"}, "unknown fields"),
    ],
)
def test_invalid_cards_are_refused_naming_the_field(change, message):
    data = {**_card().to_dict(), **change}
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(data, where="x.json")


def test_preprocessing_statement_one_spelling():
    raw = parse_preprocessing("raw")
    assert (raw.channel_order, raw.mean, raw.std) == ("RGB", (0.0,) * 3, (1 / 255,) * 3)
    mixed = parse_preprocessing("adaface, flip=sum, size=96, resize=none")
    assert (mixed.channel_order, mixed.mean, mixed.flip_fusion, mixed.input_size, mixed.resize) == (
        "BGR",
        (0.5,) * 3,
        "sum",
        (3, 96, 96),
        "none",
    )
    per_channel = parse_preprocessing("mean=0.1/0.2/0.3,std=0.5", base=Preprocessing(input_size=(3, 16, 16)))
    assert (per_channel.mean, per_channel.std, per_channel.input_size) == ((0.1, 0.2, 0.3), (0.5,) * 3, (3, 16, 16))
    for bad, message in [("sface", "unknown preset"), ("gamma=2", "unknown key"), ("mean=a", "not one number"),
                         ("size=0", "size"), ("std=nan", "not one number"), ("", "empty")]:  # fmt: skip
        with pytest.raises(CardError, match=message):
            parse_preprocessing(bad)


# ------------------------------------------------------------------------------------------------ quality branches

FAMILIES = {
    # a small member of every backbone family, registered for these tests only
    "test_iresnet": lambda **kw: IResNet((1, 1, 1, 1), arch="test_iresnet", **kw),
    "test_ir": lambda **kw: IR((1, 1, 1, 1), arch="test_ir", **kw),
    "test_mobilefacenet": lambda **kw: MobileFaceNet((1, 1, 1, 1), 1, arch="test_mobilefacenet", **kw),
    "test_lresnet": lambda **kw: LResNetXEIR((1, 1, 1, 1), arch="test_lresnet", **kw),
}
SIZE = {"test_mobilefacenet": {}, "test_iresnet": {"input_size": 16}, "test_ir": {"input_size": 16}}
SIZE["test_lresnet"] = {"input_size": 16}


@pytest.fixture(scope="module", autouse=True)
def _families() -> Iterator[None]:
    for name, factory in FAMILIES.items():
        BACKBONES.register(name)(factory)
    try:
        yield
    finally:
        for name in FAMILIES:
            BACKBONES.unregister(name)


def test_every_registered_branch_is_described():
    assert branch_names() == ["cr_fiqa", "scaleface"]
    for name in branch_names():
        branch = get_branch(name)
        assert (branch.name, bool(branch.module_name), bool(branch.aux_key)) == (name, True, True)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("branch", branch_names())
def test_every_branch_attaches_to_every_family_and_round_trips(tmp_path: Path, family: str, branch: str):
    torch.manual_seed(0)
    backbone = qualiface.create_backbone(family, quality_branch=branch, **SIZE[family]).eval()
    spec = get_branch(branch)
    keys = list(backbone.state_dict())
    assert keys[-1].startswith(f"{spec.module_name}.")  # the branch's keys follow the backbone's
    side = backbone.preprocessing.input_size[1]
    x = torch.randn(3, 3, side, side)
    with torch.no_grad():
        emb, aux = backbone.forward_aux(x)
        torch.testing.assert_close(emb, backbone(x))
    assert list(aux) == [spec.aux_key]
    assert aux[spec.aux_key].shape == (3,)

    original = FaceModel.from_backbone(backbone)
    assert original.quality_method == branch
    images = np.random.default_rng(1).integers(0, 256, size=(4, side, side, 3), dtype=np.uint8)
    emb_ref, q_ref = original.embed_and_quality(images)
    for path in (export_onnx(backbone, tmp_path / "m.onnx"), export_safetensors(backbone, tmp_path / "m.safetensors")):
        loaded = load_model(path)
        assert (loaded.quality_method, loaded.card.architecture) == (branch, family)
        emb, q = loaded.embed_and_quality(images)
        scale = float(np.abs(emb_ref).max())
        np.testing.assert_allclose(emb, emb_ref, rtol=1e-4, atol=1e-4 * scale, err_msg=str(path))
        np.testing.assert_allclose(q, q_ref, rtol=1e-4, atol=1e-4 * float(np.abs(q_ref).max()), err_msg=str(path))


def test_branch_options_are_checked():
    with pytest.raises(TypeError, match="takes the options"):
        qualiface.create_backbone("test_iresnet", input_size=16, quality_branch="cr_fiqa", scale_activation="exp")
    with pytest.raises(ValueError, match="unknown quality_branch 'magic'"):
        qualiface.create_backbone("test_iresnet", input_size=16, quality_branch="magic")
    built = qualiface.create_backbone("test_ir", input_size=16, quality_branch="scaleface", scale_activation="exp")
    assert built.scale_predictor.activation == "exp"
    assert built.arch_kwargs == {"input_size": 16, "quality_branch": "scaleface", "scale_activation": "exp"}


def test_feature_norm_quality_for_any_recognizer_is_labelled_and_unit_length_refused(tmp_path: Path):
    from qualiface.models import embed_images

    backbone = qualiface.create_backbone("test_iresnet", input_size=16).eval()
    model = FaceModel.from_backbone(backbone)
    images = np.random.default_rng(2).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="no quality output"):
        embed_images(model, images, quality=True)
    out = embed_images(model, images, quality=True, allow_untrained_quality=True)
    assert (out.quality_info.method, out.quality_info.source) == ("feature_norm", "embedding_norm")
    np.testing.assert_allclose(out.quality, np.linalg.norm(out.embeddings, axis=1), rtol=1e-6)

    class UnitLength(torch.nn.Module):  # a recognizer whose output is L2-normalised
        def __init__(self) -> None:
            super().__init__()
            self.inner = backbone
            self.embedding_dim, self.preprocessing = backbone.embedding_dim, backbone.preprocessing

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(self.inner(x))

    with pytest.raises(ValueError, match="unit-length"):
        embed_images(FaceModel.from_backbone(UnitLength()), images, quality=True, allow_untrained_quality=True)


def test_trained_quality_comes_from_the_head_registry():
    from qualiface.registry import HEADS

    produced = {name: getattr(HEADS.get(name), "trained_quality", None) for name in qualiface.list_heads()}
    assert produced == {
        "adaface": "feature_norm",
        "arcface": None,
        "cosface": None,
        "cr_fiqa": "cr_fiqa",
        "magface": "feature_norm",
        "scaleface": "scaleface",
        "softmax": None,
        "unitsface": None,
    }
    assert set(produced.values()) - {None, "feature_norm"} <= set(branch_names())


def test_card_is_written_into_both_exports(tmp_path: Path):
    backbone = qualiface.create_backbone("test_iresnet", input_size=16, quality_branch="cr_fiqa")
    model = FaceModel.from_backbone(backbone, name="exported")
    model.threshold = 0.4
    import onnx
    from safetensors import safe_open

    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx")))
    onnx_card = json.loads({p.key: p.value for p in proto.metadata_props}["qualiface.card"])
    with safe_open(str(export_safetensors(model, tmp_path / "m.safetensors")), framework="pt") as fh:
        st_card = json.loads(fh.metadata()["qualiface.card"])
    for card, container in ((onnx_card, "onnx"), (st_card, "safetensors")):
        assert (card["name"], card["source_format"], card["architecture"]) == ("exported", container, "test_iresnet")
        assert card["thresholds"][0]["value"] == 0.4
        assert card["quality"][0]["method"] == "cr_fiqa"
