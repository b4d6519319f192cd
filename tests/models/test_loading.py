"""``load_model`` on the released checkpoint formats (docs/formats.md, 'Checkpoint formats'): official key names
and containers, strict loading, identical outputs with each family's own preprocessing, clear errors, and no
unpickling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import qualiface
from _helpers import official_checkpoints as oc
from qualiface.models import (
    FaceModel,
    ModelCard,
    ModelLoadError,
    calibration_path,
    guess_format,
    load_model,
    save_calibration,
)

SIDE = 16


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, SIDE, SIDE, 3), dtype=np.uint8)


def reference(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with torch.no_grad():
        emb, aux = model.forward_aux(x)
    return emb.numpy(), {k: v.numpy() for k, v in aux.items()}


# ---------------------------------------------------------------------------------------------------- official formats


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_insightface_state_dict(tmp_path, name):
    source = oc.make_backbone(name, SIDE)
    side = source.preprocessing.input_size[1]
    imgs = np.random.default_rng(1).integers(0, 256, size=(2, side, side, 3), dtype=np.uint8)
    model = load_model(oc.save_insightface(source, tmp_path / "backbone.pth"))
    assert model.source_format == "insightface"
    assert model.info["backbone"] == name
    assert (model.preprocessing.channel_order, model.flip_policy) == ("RGB", "sum")
    assert model.quality_method is None
    want, _ = reference(source, oc.reference_input(imgs, "RGB", 0.5, 0.5))
    np.testing.assert_array_equal(model.embed(imgs), want)
    with pytest.raises(ValueError, match="no quality output"):
        model.quality(imgs)


def test_flip_fusion_sums_both_views(tmp_path, images):
    source = oc.make_backbone("iresnet18", SIDE)
    model = load_model(oc.save_insightface(source, tmp_path / "backbone.pth"))
    want, _ = reference(source, oc.reference_input(images, "RGB", 0.5, 0.5))
    flipped, _ = reference(source, oc.reference_input(images[:, :, ::-1], "RGB", 0.5, 0.5))
    np.testing.assert_allclose(model.embed(images, flip=True), want + flipped, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ddp", [False, True], ids=["dataparallel", "ddp"])
def test_magface_checkpoint(tmp_path, images, ddp):
    source = oc.make_backbone("iresnet18", SIDE, bn_eps=2e-5, bn_momentum=0.9, features_weight_trainable=True)
    model = load_model(oc.save_magface(source, tmp_path / "magface_epoch_00025.pth", ddp=ddp))
    assert model.source_format == "magface"
    assert model.module.bn1.eps == 2e-5
    prep = model.preprocessing
    assert (prep.channel_order, prep.mean, prep.std, model.flip_policy) == ("BGR", (0.0,) * 3, (1.0,) * 3, "none")
    assert model.quality_method == "feature_norm"
    assert model.info["dropped_keys"] == ["fc.weight" if ddp else "module.fc.weight"]
    want, _ = reference(source, oc.reference_input(images, "BGR", 0.0, 1.0))  # BGR, x / 255
    emb, quality = model.embed_and_quality(images)
    np.testing.assert_array_equal(emb, want)
    np.testing.assert_allclose(quality, np.linalg.norm(want, axis=1), rtol=1e-6)


def test_adaface_lightning_checkpoint(tmp_path, images):
    source = oc.make_backbone("ir_18", SIDE)
    model = load_model(oc.save_adaface(source, tmp_path / "adaface_ir18_casia.ckpt"))
    assert (model.source_format, model.info["backbone"], model.quality_method) == ("adaface", "ir_18", "feature_norm")
    assert (model.preprocessing.channel_order, model.preprocessing.mean, model.flip_policy) == (
        "BGR",
        (0.5,) * 3,
        "sum",
    )
    assert sorted(model.info["dropped_keys"]) == ["head.batch_mean", "head.batch_std", "head.kernel", "head.t"]
    want, _ = reference(source, oc.reference_input(images, "BGR", 0.5, 0.5))
    emb, quality = model.embed_and_quality(images)
    np.testing.assert_array_equal(emb, want)
    np.testing.assert_allclose(quality, np.linalg.norm(want, axis=1), rtol=1e-6)


def test_adaface_ir_se_depth_from_keys(tmp_path):
    source = oc.make_backbone("ir_se_50", 16)
    model = load_model(oc.save_adaface(source, tmp_path / "adaface_ir_se50.ckpt"))
    assert model.info["backbone"] == "ir_se_50"
    assert model.preprocessing.input_size == (3, 16, 16)


def test_crfiqa_backbone_with_quality(tmp_path, images):
    source = oc.make_backbone("iresnet18", SIDE, quality_branch="cr_fiqa", features_weight_trainable=True)
    model = load_model(oc.save_crfiqa(source, tmp_path / "32572backbone.pth"))
    assert (model.source_format, model.quality_method, model.preprocessing.channel_order) == (
        "crfiqa",
        "cr_fiqa",
        "RGB",
    )
    want, aux = reference(source, oc.reference_input(images, "RGB", 0.5, 0.5))
    emb, quality = model.embed_and_quality(images)
    np.testing.assert_array_equal(emb, want)
    np.testing.assert_array_equal(quality, aux["quality"])
    np.testing.assert_array_equal(model.quality(images), aux["quality"])


def test_scaleface_checkpoint(tmp_path, images):
    source = oc.make_backbone("iresnet18", SIDE, quality_branch="scaleface")
    model = load_model(oc.save_scaleface(source, tmp_path / "checkpoint.pth"))
    assert (model.source_format, model.quality_method) == ("scaleface", "scaleface")
    assert model.preprocessing.std == pytest.approx((128 / 255,) * 3)
    # ScaleFace eval preprocessing: RGB, (x − 127.5) / 128
    x = torch.from_numpy(images).float().sub(127.5).div(128.0).permute(0, 3, 1, 2).contiguous()
    want, aux = reference(source, x)
    emb, scale = model.embed_and_quality(images)
    # (x/255 − 0.5)/(128/255) and (x − 127.5)/128 differ in the last bit; the net amplifies that a little
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(scale, aux["scale"], rtol=1e-5)


def test_scaleface_head_activation_override(tmp_path, images):
    source = oc.make_backbone("iresnet18", SIDE, quality_branch="scaleface", scale_activation="exp")
    path = oc.save_scaleface(source, tmp_path / "checkpoint.pth")
    model = load_model(path, backbone_kwargs={"scale_activation": "exp"})
    _, aux = reference(source, torch.from_numpy(model.preprocess(images)))
    np.testing.assert_array_equal(model.quality(images), aux["scale"])


def test_qualiface_model_file_keeps_threshold(tmp_path, images):
    source = oc.make_backbone("iresnet18", SIDE)
    path = tmp_path / "model.pt"
    torch.save(
        {
            "format": "qualiface.model/1",
            "backbone": "iresnet18",
            "backbone_kwargs": {"input_size": SIDE},
            "embedding_dim": 512,
            "preprocessing": source.preprocessing.to_dict(),
            "state_dict": source.state_dict(),
            "head": {"name": "unitsface", "num_classes": 10, "threshold": 0.42},
            "head_state": {"weight": torch.randn(10, 512)},
            "step": 7,
        },
        path,
    )
    for where in (path, tmp_path):  # the file and its run directory
        model = load_model(where)
        assert (model.source_format, model.learned_threshold, model.quality_method) == ("qualiface", 0.42, None)
        assert model.threshold is None  # a learned threshold decides only when asked for
        assert model.calibration is None
        assert model.preprocessing == source.preprocessing
        want, _ = reference(source, oc.reference_input(images, "RGB", 0.5, 0.5))
        np.testing.assert_array_equal(model.embed(images), want)
    save_calibration(tmp_path, 0.5, fmr=1e-4, pairs="cfp_fp.bin")  # the run directory's model.pt sidecar
    assert (tmp_path / "model.pt.qualiface.json").is_file()
    assert load_model(path).threshold == load_model(tmp_path).threshold == 0.5  # the calibration decides
    assert load_model(path).learned_threshold == 0.42  # the head's, kept in the card


def test_qualiface_magface_model_has_norm_quality(tmp_path, images):
    source = oc.make_backbone("ir_18", SIDE)
    path = tmp_path / "model.pt"
    torch.save(
        {
            "format": "qualiface.model/1",
            "backbone": "ir_18",
            "backbone_kwargs": {"input_size": SIDE},
            "preprocessing": source.preprocessing.to_dict(),
            "state_dict": source.state_dict(),
            "head": {"name": "magface", "num_classes": 10},
        },
        path,
    )
    model = load_model(path)
    assert model.quality_method == "feature_norm"
    assert model.threshold is None
    np.testing.assert_allclose(model.quality(images), np.linalg.norm(model.embed(images), axis=1), rtol=1e-6)


def test_qualiface_checkpoint_folder(tmp_path, images):
    source = oc.make_backbone("iresnet18", SIDE, quality_branch="cr_fiqa")
    folder = tmp_path / "run" / "checkpoints" / "step_00000010"
    folder.mkdir(parents=True)
    config = {"model": {"backbone": "iresnet18", "kwargs": {"input_size": SIDE, "quality_branch": "cr_fiqa"}}}
    config["head"] = {"name": "cr_fiqa"}
    torch.save({"step": 10, "backbone": source.state_dict(), "config": config}, folder / "rank0.pt")
    (folder / "COMPLETE").write_text("step 10\n")
    for where in (tmp_path / "run", folder):
        model = load_model(where)
        assert (model.source_format, model.quality_method) == ("qualiface", "cr_fiqa")
        _, aux = reference(source, oc.reference_input(images, "RGB", 0.5, 0.5))
        np.testing.assert_array_equal(model.quality(images), aux["quality"])


def test_format_and_arch_can_be_forced(tmp_path):
    source = oc.make_backbone("iresnet18", 16)
    path = oc.save_insightface(source, tmp_path / "weights.bin")
    assert load_model(path, format="arcface_torch", arch="iresnet18").info["backbone"] == "iresnet18"
    with pytest.raises(ModelLoadError, match=r"iresnet34.*missing keys: layer1\.2\."):
        load_model(path, arch="iresnet34")
    with pytest.raises(ModelLoadError, match=r"crfiqa.*2 missing keys: qs\.weight, qs\.bias"):
        load_model(path, format="crfiqa")
    with pytest.raises(ModelLoadError, match="unknown format 'nope'"):
        load_model(path, format="nope")


# ---------------------------------------------------------------------------------------------------- errors


def test_renamed_key_names_missing_unexpected_and_format(tmp_path):
    source = oc.make_backbone("ir_18", 16)
    path = oc.save_adaface(source, tmp_path / "adaface.ckpt")
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["model.body.3.res_layer.1.weeight"] = ckpt["state_dict"].pop("model.body.3.res_layer.1.weight")
    torch.save(ckpt, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    assert "1 missing keys: body.3.res_layer.1.weight" in message
    assert "1 unexpected keys: body.3.res_layer.1.weeight" in message
    assert "most likely source format: adaface" in message


def test_shape_mismatch_is_reported(tmp_path):
    state = oc.make_backbone("iresnet18", 16).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    torch.save(state, tmp_path / "backbone.pth")
    with pytest.raises(ModelLoadError, match=r"1 shape mismatches.*layer2\.0\.conv1\.weight \(128, 64, 1, 1\)"):
        load_model(tmp_path / "backbone.pth")


def test_arbitrary_dict_is_rejected(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match=r"fit no known checkpoint layout.*encoder\.weight"):
        load_model(tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ModelLoadError, match="expected a dict of weights"):
        load_model(tmp_path / "tensor.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a readable PyTorch file"):
        load_model(tmp_path / "junk.pth")


def test_unknown_depth_is_reported(tmp_path):
    state = oc.make_backbone("iresnet18", 16).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    torch.save(state, tmp_path / "backbone.pth")
    with pytest.raises(ModelLoadError, match=r"blocks per stage \(2, 2, 2, 1\) match no iResNet"):
        load_model(tmp_path / "backbone.pth")


def test_pickled_module_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / "LResNet50EIR_1th_epoch.pth"
    torch.save(oc.Booby(str(marker)), path)
    with pytest.raises(ModelLoadError, match=r"refused to load.*weights_only=True.*official_checkpoints\.touch"):
        load_model(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the trap is real: full unpickling runs it
    assert marker.exists()


def test_whole_nn_module_gets_the_state_dict_hint(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "net.pth")
    with pytest.raises(ModelLoadError, match=r"whole pickled nn\.Module.*state_dict"):
        load_model(tmp_path / "net.pth")


def test_unitsface_checkpoint_with_its_learned_threshold(tmp_path, images):
    source = oc.make_backbone("lresnet50eir", SIDE)
    model = load_model(oc.save_unitsface_tar(source, tmp_path / "LResNet50EIR_1th_checkpoint.tar", bias=20.5))
    assert model.source_format == "unitsface"
    assert model.info["backbone"] == "lresnet50eir"
    assert (model.preprocessing.channel_order, model.flip_policy) == ("RGB", "sum")
    assert model.learned_threshold == pytest.approx(20.5 / 64)  # t = b / gamma
    assert model.threshold is None  # it decides only when asked for
    want, _ = reference(source, oc.reference_input(images, "RGB", 0.5, 0.5))
    flipped, _ = reference(source, oc.reference_input(images[:, :, ::-1], "RGB", 0.5, 0.5))
    np.testing.assert_array_equal(model.embed(images), want)
    np.testing.assert_allclose(model.embed(images, flip=True), want + flipped, rtol=1e-6, atol=1e-5)
    with pytest.raises(ModelLoadError, match="lresnet100eir"):  # a forced architecture that does not fit
        load_model(tmp_path / "LResNet50EIR_1th_checkpoint.tar", arch="lresnet100eir")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model("/nonexistent/model.pt")


def test_guess_format_ranks_layouts():
    with torch.device("meta"):
        keys = list(qualiface.create_backbone("iresnet18", quality_branch="cr_fiqa").state_dict())
    assert guess_format(keys)[0] == ("crfiqa", 1.0)
    assert guess_format([f"features.module.{k}" for k in keys if not k.startswith("qs.")])[0][0] == "magface"
    assert guess_format(["model.input_layer.0.weight", "head.kernel"])[0][0] == "adaface"
    assert guess_format(["input_layer.0.weight", "body.0.res_layer.0.weight"])[0] == ("adaface", 1.0)
    assert guess_format(["fc5.weight", "layer1.0.bn0.weight"])[0][0] == "unitsface"


# ------------------------------------------------------------------------------------------------ images, calibration


def test_image_checks_and_list_input(tmp_path, images):
    model = load_model(oc.save_insightface(oc.make_backbone("iresnet18", SIDE), tmp_path / "b.pth"))
    whole = model.embed(images)  # other batch sizes may pick other kernels: equal up to rounding
    np.testing.assert_allclose(model.embed(list(images), batch_size=2), whole, atol=1e-5 * np.abs(whole).max())
    assert model.embed(images[:0]).shape == (0, 512)
    with pytest.raises(ValueError, match=r"image 0 is 8x12 pixels, not a square aligned face crop"):
        model.embed(np.zeros((1, 12, 8, 3), np.uint8))
    # a square crop of another size is resized as the card says (area by default) ...
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # each pixel a 2x2 block: area-resizes back exactly
    np.testing.assert_allclose(model.embed(big), whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    # ... or refused when it says none
    model.preprocessing = dataclasses.replace(model.preprocessing, resize="none")
    with pytest.raises(ValueError, match=r"image 0 is 32x32 pixels but the model takes 16x16 .* resize none"):
        model.embed(big)
    with pytest.raises(ValueError, match="RGB uint8"):
        model.embed(images.astype(np.float32))
    with pytest.raises(ValueError, match="one image"):
        model.embed(images[0])


def test_calibration_sidecar_round_trip(tmp_path, images):
    path = oc.save_insightface(oc.make_backbone("iresnet18", 16), tmp_path / "backbone.pth")
    assert load_model(path).threshold is None
    sidecar = save_calibration(path, 0.31, fmr=1e-3, pairs="lfw.bin")
    assert sidecar == calibration_path(path) == tmp_path / "backbone.pth.qualiface.json"
    record = json.loads(sidecar.read_text())
    assert (record["threshold"], record["fmr"], record["pairs"], record["metric"]) == (0.31, 1e-3, "lfw.bin", "cosine")
    model = load_model(path)
    assert model.threshold == 0.31
    assert model.calibration["pairs"] == "lfw.bin"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="fmr"):
        save_calibration(path, 0.3, fmr=2.0, pairs="x")
    sidecar.write_text("{}")
    with pytest.raises(ModelLoadError, match="not a qualiface calibration file"):
        load_model(path)


def test_face_model_needs_one_backend():
    with pytest.raises(ValueError, match="exactly one"):
        FaceModel(ModelCard("x", "x", 512, oc.make_backbone("iresnet18", 16).preprocessing))


def test_model_path_environment_lookup(tmp_path, monkeypatch):
    oc.save_insightface(oc.make_backbone("iresnet18", 16), tmp_path / "r18.pth")
    monkeypatch.setenv("QUALIFACE_MODEL_PATH", str(tmp_path))
    assert Path(load_model("r18").path) == tmp_path / "r18.pth"
