"""ONNX and safetensors export: every backbone and both quality branches round-trip through onnxruntime within
1e-4 of PyTorch, with a dynamic batch, and the preprocessing travels in the file's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import qualiface
from _helpers import official_checkpoints as oc
from _helpers.shared_data import SHARED_DATA
from qualiface.models import ModelLoadError, export_onnx, export_safetensors, load_model

SIDE = 16
ATOL = 1e-4
# 5-40 s each to trace, check and run on a shared 2-core machine; the other depths of each family stay fast
HEAVY = {
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "ir_50",
    "ir_101",
    "ir_se_50",
    "ir_se_101",
    "mobilefacenet_large",
    "lresnet100eir",
    "lresnet200eir",
}
FAMILY_NAMES = [n for n in qualiface.list_backbones() if n.startswith(("iresnet", "ir_", "mobilefacenet", "lresnet"))]
SFACE = SHARED_DATA / "models" / "face_recognition_sface_2021dec_fp32_dequantized.onnx"


def torch_outputs(backbone: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    with torch.no_grad():
        emb, aux = backbone.forward_aux(torch.from_numpy(x))
    quality = next(iter(aux.values())).numpy() if aux else None
    return emb.numpy(), quality


def check_round_trip(backbone: qualiface.Backbone, path: Path) -> float:
    """Export (traced with batch 2), run with batch 3; returns the max abs embedding error."""
    export_onnx(backbone, path)
    onnx_model = load_model(path)
    assert onnx_model.session is not None
    assert onnx_model.preprocessing == backbone.preprocessing
    assert onnx_model.embedding_dim == backbone.embedding_dim
    _, height, width = backbone.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((3, 3, height, width)).astype(np.float32)
    want, want_q = torch_outputs(backbone, x)
    got, got_q = onnx_model.forward_array(x)
    assert got.shape == want.shape == (3, backbone.embedding_dim)
    err = float(np.abs(got - want).max())
    assert err <= ATOL * max(1.0, float(np.abs(want).max()) / 10), err
    if want_q is None:
        assert got_q is None
    else:
        assert got_q is not None
        np.testing.assert_allclose(got_q, want_q, atol=ATOL, rtol=1e-5)
    return err


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in FAMILY_NAMES])
def test_onnx_round_trip_every_backbone(tmp_path, name):
    backbone = oc.make_backbone(name, SIDE)
    check_round_trip(backbone, tmp_path / f"{name}.onnx")


@pytest.mark.parametrize(("name", "branch"), [("iresnet18", "cr_fiqa"), ("ir_18", "scaleface")])
def test_onnx_round_trip_quality_branches(tmp_path, name, branch):
    backbone = oc.make_backbone(name, SIDE, quality_branch=branch)
    check_round_trip(backbone, tmp_path / "model.onnx")
    model = load_model(tmp_path / "model.onnx")
    assert model.quality_method == branch
    assert [o.name for o in model.session.get_outputs()] == ["embedding", "quality"]
    assert model.session.get_inputs()[0].name == "input"
    assert model.session.get_inputs()[0].shape[0] == "batch"


def test_loaded_magface_exports_with_its_preprocessing(tmp_path):
    source = oc.make_backbone("iresnet18", SIDE, bn_eps=2e-5, features_weight_trainable=True)
    model = load_model(oc.save_magface(source, tmp_path / "magface.pth"))
    onnx_model = load_model(export_onnx(model, tmp_path / "magface.onnx"))
    prep = onnx_model.preprocessing
    assert (prep.channel_order, prep.mean, prep.std) == ("BGR", (0.0,) * 3, (1.0,) * 3)
    card = json.loads(onnx_model.info["metadata"]["qualiface.card"])
    assert (onnx_model.quality_method, card["architecture"]) == ("feature_norm", "iresnet18")
    assert (card["preprocessing"]["channel_order"], card["preprocessing"]["mean"]) == ("BGR", [0.0, 0.0, 0.0])
    assert (card["preprocessing"]["input_size"], card["embedding_dim"]) == ([3, 16, 16], 512)
    assert card["provenance"]["exported_from"] == "magface"
    images = np.random.default_rng(0).integers(0, 256, size=(5, SIDE, SIDE, 3), dtype=np.uint8)
    emb, quality = model.embed_and_quality(images)
    emb2, quality2 = onnx_model.embed_and_quality(images, batch_size=3)
    np.testing.assert_allclose(emb2, emb, atol=ATOL)
    np.testing.assert_allclose(quality2, quality, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(onnx_model.embed(images, flip=True), model.embed(images, flip=True), atol=2 * ATOL)


def test_fixed_batch_and_without_quality(tmp_path):
    backbone = oc.make_backbone("iresnet18", SIDE, quality_branch="cr_fiqa")
    model = load_model(export_onnx(backbone, tmp_path / "fixed.onnx", dynamic_batch=False, with_quality=False))
    assert model.session.get_inputs()[0].shape[0] == 1
    assert model.quality_method is None
    x = np.random.default_rng(0).standard_normal((3, 3, SIDE, SIDE)).astype(np.float32)
    got, quality = model.forward_array(x)  # three images through a batch-1 graph
    assert quality is None
    np.testing.assert_allclose(got, torch_outputs(backbone, x)[0], atol=ATOL)


def test_threshold_travels_in_onnx_metadata(tmp_path):
    source = oc.make_backbone("iresnet18", SIDE)
    model = load_model(oc.save_insightface(source, tmp_path / "backbone.pth"))
    model.threshold = 0.25
    assert load_model(export_onnx(model, tmp_path / "m.onnx")).threshold == 0.25


def test_safetensors_round_trip(tmp_path):
    source = oc.make_backbone("ir_18", SIDE, quality_branch="scaleface", scale_activation="exp")
    path = export_safetensors(source, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert loaded.source_format == "safetensors"
    assert loaded.quality_method == "scaleface"
    assert loaded.module.scale_predictor.activation == "exp"
    assert loaded.preprocessing == source.preprocessing
    images = np.random.default_rng(0).integers(0, 256, size=(2, SIDE, SIDE, 3), dtype=np.uint8)
    x = loaded.preprocess(images)
    want, want_q = torch_outputs(source, x)
    emb, quality = loaded.embed_and_quality(images)
    np.testing.assert_array_equal(emb, want)
    np.testing.assert_array_equal(quality, want_q)


def test_safetensors_of_a_loaded_official_model_keeps_family_preprocessing(tmp_path):
    source = oc.make_backbone("iresnet18", SIDE, quality_branch="cr_fiqa", features_weight_trainable=True)
    model = load_model(oc.save_crfiqa(source, tmp_path / "32572backbone.pth"))
    model.threshold = 0.3
    loaded = load_model(export_safetensors(model, tmp_path / "crfiqa.safetensors"))
    assert (loaded.preprocessing, loaded.quality_method, loaded.threshold) == (model.preprocessing, "cr_fiqa", 0.3)
    assert loaded.info["source_format"] == "crfiqa"
    images = np.random.default_rng(0).integers(0, 256, size=(2, SIDE, SIDE, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.quality(images), model.quality(images), rtol=1e-5)


def test_foreign_safetensors_state_dict_is_detected(tmp_path):
    from safetensors.torch import save_file

    source = oc.make_backbone("iresnet18", SIDE)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    model = load_model(tmp_path / "r18.safetensors")
    assert (model.source_format, model.info["backbone"]) == ("insightface", "iresnet18")


@pytest.mark.skipif(not SFACE.is_file(), reason=f"{SFACE} is not present")
def test_sface_onnx_embeds_112px_images():
    model = load_model(SFACE)
    assert (model.source_format, model.embedding_dim, model.input_size) == ("onnx", 128, (112, 112))
    assert model.preprocessing.channel_order == "RGB"
    images = np.random.default_rng(0).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    emb = model.embed(images)  # fixed batch 1: run image by image
    assert emb.shape == (3, 128)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(model.embed(images[1:2]), emb[1:2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no quality output"):
        model.quality(images)


def test_foreign_onnx_gets_insightface_normalisation_or_an_override(tmp_path):
    import onnx

    backbone = oc.make_backbone("iresnet18", SIDE)
    path = export_onnx(backbone, tmp_path / "plain.onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]  # as arcface_torch's torch2onnx.py writes it: no metadata
    onnx.save(proto, str(path))
    with pytest.raises(ModelLoadError, match=r"does not know .* --preprocessing"):
        load_model(path)  # unknown weights, no normalisation in the graph: never guessed
    model = load_model(path, preprocessing="arcface")
    prep = model.preprocessing
    assert (prep.channel_order, prep.mean, prep.std, prep.input_size) == ("RGB", (0.5,) * 3, (0.5,) * 3, (3, 16, 16))
    assert (model.quality_method, model.embedding_dim) == (None, 512)
    bgr = load_model(path, preprocessing={"channel_order": "BGR", "mean": 0.0, "std": [1.0, 1.0, 1.0]})
    assert (bgr.preprocessing.channel_order, bgr.preprocessing.mean) == ("BGR", (0.0,) * 3)
