"""What a model is decides every result, whatever its file is called: the same bytes under another name, the two
embedding commands, thresholds bound to their weights, quality from any recognizer, the demo's model on photos,
and ``qualiface info`` on every format. Real photos and SFace come from ``../shared/data`` (skipped with a reason
when absent)."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import qualiface
from _helpers import official_checkpoints as oc
from _helpers.shared_data import SHARED_DATA, need
from qualiface.cli.app import app
from qualiface.models import load_model
from qualiface.models.card import file_sha256

ORL = SHARED_DATA / "orl"
GLINT = SHARED_DATA / "glint360k-sample"
SFACE = SHARED_DATA / "models" / "face_recognition_sface_2021dec_fp32_dequantized.onnx"
runner = CliRunner()


def _glint_pairs(tmp_path: Path, count: int) -> tuple[Path, list[Path]]:
    """``count`` pairs of the Glint sample (half genuine, half impostor) as a pairs CSV with absolute paths, and
    their files."""
    with open(GLINT / "pairs_10fold.csv", newline="") as fh:
        every = list(csv.reader(fh))[1:]  # fold 0: 300 genuine, then 300 impostor pairs
    rows = every[: count // 2] + every[300 : 300 + count - count // 2]
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path_a", "path_b", "issame"])
        for row in rows:
            writer.writerow([GLINT / row[1], GLINT / row[2], row[3]])
    files = list(dict.fromkeys(GLINT / row[k] for row in rows for k in (1, 2)))
    return path, files


def _embed(model: Path, photos: list[Path], out: Path, *extra: str) -> dict[str, np.ndarray]:
    result = runner.invoke(app, ["embed", *map(str, photos), "--model", str(model), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _with_metadata(source: Path, target: Path) -> Path:
    """``source`` with one more metadata entry: other bytes (another SHA-256), the same graph."""
    import onnx

    proto = onnx.load(str(source))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "note", "copied"
    onnx.save(proto, str(target))
    return target


def test_a_foreign_onnx_under_another_name_gives_identical_embeddings(tmp_path: Path) -> None:
    need(SFACE, GLINT)
    _, photos = _glint_pairs(tmp_path, 3)
    renamed = shutil.copy(SFACE, tmp_path / "my_recognizer.onnx")
    reference = _embed(SFACE, photos, tmp_path / "a.npz", "--aligned")
    copied = _embed(Path(renamed), photos, tmp_path / "b.npz", "--aligned")
    np.testing.assert_array_equal(copied["embeddings"], reference["embeddings"])
    stamp = json.loads(str(copied["model"]))
    assert stamp["model_sha256"] == file_sha256(SFACE)
    # other bytes, same graph: not in the table, but the graph proves its normalisation: still identical
    other = _with_metadata(SFACE, tmp_path / "x.onnx")
    proven = _embed(other, photos, tmp_path / "c.npz", "--aligned")
    np.testing.assert_array_equal(proven["embeddings"], reference["embeddings"])
    info = runner.invoke(app, ["info", str(other), "--json"])
    assert (
        "the graph normalises its input (Sub 127.5 -> Mul 0.0078125)"
        in json.loads(info.stdout)["provenance"]["preprocessing_from"]
    )


def test_an_unknown_onnx_is_refused_naming_the_preprocessing_then_stated(tmp_path: Path) -> None:
    backbone = oc.make_backbone("iresnet18", 16)
    path = qualiface.models.export_onnx(backbone, tmp_path / "plain.onnx")
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]  # as arcface_torch's torch2onnx.py writes it
    onnx.save(proto, str(path))
    images = tmp_path / "faces"
    images.mkdir()
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((112, 112, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    command = ["embed", str(images), "--model", str(path), "--out", str(tmp_path / "e.npz"), "--aligned"]
    refused = runner.invoke(app, command)
    assert refused.exit_code == 2
    assert "--preprocessing" in refused.output
    assert "Traceback" not in refused.output
    described = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)  # info describes, never runs
    assert (described["preprocessing"]["source"], described["embedding_dim"]) == ("unknown", 512)
    assert described["provenance"]["preprocessing_from"] == "unknown: state it with --preprocessing"
    with pytest.raises(ValueError, match="preprocessing is unknown"):
        load_model(path, describe_only=True).embed(np.zeros((1, 16, 16, 3), np.uint8))
    stated = runner.invoke(app, [*command, "--preprocessing", "arcface"])
    assert stated.exit_code == 0, stated.output
    assert "preprocessing: RGB, (x/255 − 0.5)/0.5, 16x16, resize area, flip none (from: stated by the user)" in (
        stated.stderr
    )
    with np.load(tmp_path / "e.npz") as data:
        assert data["embeddings"].shape == (2, 512)  # 112x112 crops resized to the model's 16x16


def test_eval_verify_and_embed_give_identical_embeddings(tmp_path: Path) -> None:
    need(SFACE, GLINT)
    pairs, photos = _glint_pairs(tmp_path, 8)
    embedded = _embed(SFACE, photos, tmp_path / "e.npz", "--aligned")
    by_file = dict(zip(embedded["files"].tolist(), embedded["embeddings"], strict=True))
    out = tmp_path / "verify"
    result = runner.invoke(
        app,
        [
            *("eval", "verify", "--pairs", str(pairs), "--model", str(SFACE), "--save-embeddings", "--no-plot"),
            *("--folds", "2", "-o", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = np.load(out / "embeddings.npz")
    with open(pairs, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(saved["embeddings_a"][i], by_file[row["path_a"]])
        np.testing.assert_array_equal(saved["embeddings_b"][i], by_file[row["path_b"]])
    meta = json.loads((out / "verification.json").read_text())["meta"]
    assert meta["model_sha256"] == file_sha256(SFACE)


def test_a_threshold_belongs_to_its_model(tmp_path: Path) -> None:
    need(SFACE, GLINT)
    pairs, photos = _glint_pairs(tmp_path, 40)
    model = Path(shutil.copy(SFACE, tmp_path / "model.onnx"))
    result = runner.invoke(
        app, ["calibrate", "--model", str(model), "--pairs", str(pairs), "--fmr", "0.1", "--aligned", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    sidecar = tmp_path / "model.onnx.qualiface.json"
    record = json.loads(sidecar.read_text())
    assert record["model_sha256"] == file_sha256(SFACE)
    verify = ["verify", str(photos[0]), str(photos[1]), "--model", str(model), "--aligned", "--json"]
    ok = runner.invoke(app, verify)
    assert ok.exit_code == 0, ok.output
    decided = json.loads(ok.stdout)
    assert (decided["threshold"], decided["threshold_source"]) == (record["threshold"], "calibration")
    card = json.loads(runner.invoke(app, ["info", str(model), "--json"]).stdout)
    assert card["thresholds"][-1]["kind"] == "calibrated"
    assert card["thresholds"][-1]["n_impostor"] == record["n_impostor"]

    _with_metadata(SFACE, model)  # the model file is replaced: other weights as far as anyone can tell
    swapped = runner.invoke(app, verify)
    assert swapped.exit_code == 2
    assert "Recalibrate" in swapped.output
    assert str(sidecar) in swapped.output

    shutil.copy(SFACE, model)
    for bad in ("-1e9", "NaN", "Infinity", '"0.3"'):
        sidecar.write_text(json.dumps(record).replace(json.dumps(record["threshold"]), bad, 1))
        refused = runner.invoke(app, verify)
        assert refused.exit_code == 2, (bad, refused.output)
        assert str(sidecar) in refused.output
        assert "Traceback" not in refused.output
    sidecar.write_text("{not json")
    assert "unreadable calibration file" in runner.invoke(app, verify).output
    with pytest.raises(ValueError, match="finite"):
        qualiface.models.save_calibration(model, float("nan"), fmr=0.1, pairs="p")


def test_quality_of_a_plain_recognizer_is_its_labelled_feature_norm(tmp_path: Path) -> None:
    need(SFACE, GLINT)
    _, photos = _glint_pairs(tmp_path, 6)
    result = runner.invoke(app, ["quality", *map(str, photos), "--model", str(SFACE), "--aligned"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(photos)
    assert {(r["method"], r["source"]) for r in rows} == {("feature_norm", "embedding_norm")}
    assert {r["model_sha256"] for r in rows} == {file_sha256(SFACE)}
    scores = np.array([float(r["score"]) for r in rows])
    model = load_model(SFACE)
    from qualiface.models import embed_images
    from qualiface.use import load_faces

    faces = load_faces(photos, aligned=True)
    expected = np.linalg.norm(embed_images(model, faces.images).embeddings, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert np.ptp(scores) > 0.01 * scores.mean()  # not unit-length: the norm varies with the face


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qualiface.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(out, quick=True, progress=False)
    return out / "run"


def test_the_demo_model_embeds_verifies_and_serves_photos(tmp_path: Path, demo_run: Path) -> None:
    need(ORL / "s1")
    photos = [ORL / "s1" / "1.pgm", ORL / "s1" / "6.pgm", ORL / "s2" / "1.pgm"]
    card = load_model(demo_run).card
    assert card.preprocessing.input_size == (3, 32, 32)
    embedded = _embed(demo_run, photos, tmp_path / "demo.npz")
    assert embedded["embeddings"].shape == (3, card.embedding_dim)
    assert np.isfinite(embedded["embeddings"]).all()
    assert embedded["quality"].shape == (3,)
    verified = runner.invoke(app, ["verify", str(photos[0]), str(photos[1]), "--model", str(demo_run), "--json"])
    assert verified.exit_code == 0, verified.output
    assert -1 <= json.loads(verified.stdout)["similarity"] <= 1

    from qualiface.serve import FaceService, ServerOptions, create_app, serving_in_thread

    with serving_in_thread(create_app(FaceService(load_model(demo_run))), ServerOptions(port=0)) as base:
        photo = photos[0].read_bytes()
        status, body = _post(f"{base}/embed", photo)
        assert status == 200, body
        assert len(body["faces"][0]["embedding"]) == card.embedding_dim
        assert body["model"]["preprocessing"] == card.preprocessing.describe()
        status, body = _post(f"{base}/quality", photo)
        assert (status, body["method"]) == (200, "cr_fiqa")
        pair = {"a": base64.b64encode(photo).decode(), "b": base64.b64encode(photos[2].read_bytes()).decode()}
        status, body = _post(f"{base}/verify", json.dumps(pair).encode())
        assert status == 200, body
        status, body = _post(f"{base}/verify", json.dumps({**pair, "threshold": 5}).encode())
        assert status == 400
        assert "within [-1, 1]" in body["error"]


def _post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ------------------------------------------------------------------------------------------------ qualiface info


def _every_format(root: Path, demo_run: Path) -> dict[str, Path]:
    side = 16
    torch.manual_seed(0)
    files = {
        "insightface": oc.save_insightface(oc.make_backbone("iresnet18", side), root / "backbone.pth"),
        "magface": oc.save_magface(
            oc.make_backbone("iresnet18", side, bn_eps=2e-5, features_weight_trainable=True), root / "magface.pth"
        ),
        "adaface": oc.save_adaface(oc.make_backbone("ir_18", side), root / "adaface.ckpt"),
        "crfiqa": oc.save_crfiqa(
            oc.make_backbone("iresnet18", side, quality_branch="cr_fiqa", features_weight_trainable=True),
            root / "181952backbone.pth",
        ),
        "scaleface": oc.save_scaleface(
            oc.make_backbone("iresnet18", side, quality_branch="scaleface"), root / "checkpoint.pth"
        ),
        "unitsface": oc.save_unitsface_tar(oc.make_backbone("lresnet50eir", side), root / "x_checkpoint.tar"),
        "qualiface": demo_run,
    }
    model = load_model(files["crfiqa"])
    files["safetensors"] = qualiface.models.export_safetensors(model, root / "m.safetensors")
    files["onnx"] = qualiface.models.export_onnx(model, root / "m.onnx")
    return files


def test_info_on_every_supported_format(tmp_path: Path, demo_run: Path) -> None:
    from qualiface.models import format_names
    from qualiface.models.calibration import weights_file

    files = _every_format(tmp_path, demo_run)
    assert sorted(files) == format_names()
    for fmt, path in files.items():
        text = runner.invoke(app, ["info", str(path)])
        assert text.exit_code == 0, (fmt, text.output)
        assert f"format          {fmt}" in text.stdout, text.stdout
        card = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
        assert card["version"] == "qualiface.card/1"
        assert card["source_format"] == fmt
        assert card["weights_sha256"] == file_sha256(weights_file(path)), fmt
        assert card["preprocessing"]["input_size"][0] == 3
    expected = {"magface": "feature_norm", "adaface": "feature_norm", "crfiqa": "cr_fiqa", "scaleface": "scaleface"}
    for fmt, method in expected.items():
        assert load_model(files[fmt]).card.quality_method == method
    assert load_model(files["unitsface"]).card.learned_threshold is not None  # kept, not deciding by default
    assert load_model(files["unitsface"]).card.decision_threshold is None
    listing = runner.invoke(app, ["info", "--formats"])
    assert all(name in listing.stdout for name in format_names())
    missing = runner.invoke(app, ["info", str(tmp_path / "nothing.pt")])
    assert missing.exit_code == 2
    assert "no such model file" in missing.output
