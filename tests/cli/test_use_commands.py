"""The photo commands end to end: embed, quality, verify, calibrate, export, serve.

Real photos (skipped with a reason when ``../shared/data`` is absent): ORL (92x112 greyscale, not aligned, so the
YuNet detector and the alignment do real work) and aligned Glint360K crops; the recognizer is OpenCV Zoo's SFace
(ONNX). Commands with a quality output use a small qualiface model written in the test (random weights: these
tests check the plumbing, the quality of real models is tested in tests/models and by the demo).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _helpers.hostile import png_claiming
from _helpers.quality_model import write_quality_model
from _helpers.shared_data import SHARED_DATA, need
from qualiface.cli.app import app
from qualiface.models import load_model

ORL = SHARED_DATA / "orl"
GLINT = SHARED_DATA / "glint360k-sample"
SFACE = SHARED_DATA / "models" / "face_recognition_sface_2021dec_fp32_dequantized.onnx"
runner = CliRunner()


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An iresnet18 ``model.pt`` with CR-FIQA's quality branch (random weights; _helpers/quality_model.py)."""
    return write_quality_model(tmp_path_factory.mktemp("model") / "model.pt")


def _orl(person: int, photo: int) -> Path:
    return ORL / f"s{person}" / f"{photo}.pgm"


def test_help_of_every_photo_command() -> None:
    for command in ("embed", "quality", "verify", "calibrate", "export", "serve"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_verify_tells_same_person_from_different_people(tmp_path: Path) -> None:
    need(ORL / "s1", SFACE)
    same = runner.invoke(app, ["verify", str(_orl(1, 1)), str(_orl(1, 6)), "--model", str(SFACE), "--json"])
    other = runner.invoke(app, ["verify", str(_orl(1, 1)), str(_orl(2, 1)), "--model", str(SFACE), "--json"])
    assert same.exit_code == 0, same.output
    assert other.exit_code == 0, other.output
    a = json.loads(same.stdout)
    b = json.loads(other.stdout)
    assert a["similarity"] > b["similarity"] + 0.3
    assert a["match"] is None  # SFace carries no threshold and none was calibrated
    assert (a["decision"], a["verified"], a["confidence"]) == ("undecided", None, None)
    assert a["reasons"][0].startswith("no threshold")
    assert "no threshold" in same.stderr
    decided = runner.invoke(
        app, ["verify", str(_orl(1, 1)), str(_orl(1, 6)), "--model", str(SFACE), "--threshold", "0.363"]
    )
    assert "decision    match (same person) (threshold 0.3630 from argument)" in decided.stdout
    assert "confidence  unavailable" in decided.stdout


def test_verify_reports_a_photo_without_a_face(tmp_path: Path) -> None:
    need(ORL / "s1", SFACE)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 100, 3), 128, np.uint8)).save(blank)
    result = runner.invoke(app, ["verify", str(_orl(1, 1)), str(blank), "--model", str(SFACE)])
    assert result.exit_code == 1
    assert f"image B: {blank}: no face found" in result.stderr


def test_embed_writes_rows_with_file_names_and_reports_failures(tmp_path: Path) -> None:
    need(ORL / "s3", SFACE)
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in (1, 2, 3):
        (folder / f"p{photo}.pgm").write_bytes(_orl(3, photo).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "emb.npz"
    result = runner.invoke(app, ["embed", str(folder), "--model", str(SFACE), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert data["embeddings"].shape == (3, 128)
    assert sorted(Path(f).name for f in data["files"]) == ["p1.pgm", "p2.pgm", "p3.pgm"]
    assert f"skipped {folder / 'broken.jpg'}: unreadable" in result.stderr
    assert "wrote 3 embeddings" in result.stdout
    npy = tmp_path / "emb.npy"
    again = runner.invoke(app, ["embed", str(folder), "--model", str(SFACE), "--out", str(npy), "--no-progress"])
    assert again.exit_code == 0
    np.testing.assert_allclose(np.load(npy), data["embeddings"], rtol=1e-5, atol=1e-6)
    assert npy.with_suffix(".files.csv").read_text().splitlines()[0] == "row,file,face_index"
    import pyarrow.parquet as pq

    table_path = tmp_path / "emb.parquet"
    third = runner.invoke(app, ["embed", str(folder), "--model", str(SFACE), "--out", str(table_path), "--no-progress"])
    assert third.exit_code == 0, third.output
    table = pq.read_table(table_path).to_pydict()
    assert table["file"] == [str(f) for f in data["files"]]
    np.testing.assert_allclose(np.array(table["embedding"]), data["embeddings"], rtol=1e-5, atol=1e-6)


def test_quality_writes_one_score_per_face(tmp_path: Path, quality_model: Path) -> None:
    need(GLINT / "images")
    files = sorted((GLINT / "images" / "Tom_Hanks").glob("*.jpg"))[:4]
    out = tmp_path / "q.csv"
    result = runner.invoke(
        app, ["quality", *map(str, files), "--model", str(quality_model), "--aligned", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["file"]) for r in rows] == files
    assert {r["method"] for r in rows} == {"cr_fiqa"}
    expected = load_model(quality_model).quality(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-5, atol=1e-6)


def test_quality_of_a_model_without_quality_output_is_its_labelled_embedding_norm() -> None:
    need(SFACE, GLINT / "images")
    one = next((GLINT / "images" / "Tom_Hanks").glob("*.jpg"))
    result = runner.invoke(app, ["quality", str(one), "--model", str(SFACE), "--aligned"])
    assert result.exit_code == 0, result.output
    assert "has no trained quality output" in result.stderr
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert (row["method"], row["source"]) == ("feature_norm", "embedding_norm")


def test_calibrate_stores_a_threshold_that_verify_then_uses(tmp_path: Path) -> None:
    need(SFACE, GLINT / "pairs_10fold.csv")
    model = tmp_path / "sface.onnx"
    model.write_bytes(SFACE.read_bytes())
    pairs = tmp_path / "pairs.csv"
    lines = (GLINT / "pairs_10fold.csv").read_text().splitlines()
    pairs.write_text("\n".join(lines[:41] + lines[301:341]) + "\n")  # 40 genuine + 40 impostor pairs
    result = runner.invoke(
        app,
        ["calibrate", "--model", str(model), "--pairs", str(pairs), "--root", str(GLINT), "--fmr", "0.05",
         "--aligned", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sidecar = tmp_path / "sface.onnx.qualiface.json"
    record = json.loads(sidecar.read_text())
    assert record["fmr"] == 0.05
    reloaded = load_model(model)
    assert reloaded.threshold == pytest.approx(record["threshold"])
    # the threshold leaves at most floor(0.05 * 40) = 2 impostor pairs at or above it
    report = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert report["n_impostor"] == 40
    assert report["fmr"] <= 0.05
    a, b = lines[1].split(",")[1:3]
    verdict = runner.invoke(app, ["verify", str(GLINT / a), str(GLINT / b), "--model", str(model), "--aligned"])
    assert "from calibration" in verdict.stdout


def test_export_onnx_and_safetensors_of_a_quality_model(tmp_path: Path, quality_model: Path) -> None:
    onnx_path, st_path = tmp_path / "m.onnx", tmp_path / "m.safetensors"
    result = runner.invoke(app, ["export", str(quality_model), "--onnx", str(onnx_path), "--safetensors", str(st_path)])
    assert result.exit_code == 0, result.output
    assert "max relative difference" in result.stdout
    images = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    source = load_model(quality_model)
    for exported in (load_model(onnx_path), load_model(st_path)):
        np.testing.assert_allclose(exported.quality(images), source.quality(images), rtol=1e-4, atol=1e-4)
    refused = runner.invoke(app, ["export", str(onnx_path), "--onnx", str(tmp_path / "again.onnx")])
    assert refused.exit_code == 2
    assert "already an ONNX model" in refused.stderr


def _post(url: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_embed_quality_verify_and_errors(quality_model: Path) -> None:
    need(ORL / "s1")
    from qualiface.serve import FaceService, ServerOptions, ServeSettings, create_app, serving_in_thread

    service = FaceService(load_model(quality_model), max_pixels=2_000_000)
    served = serving_in_thread(create_app(service, ServeSettings(max_bytes=200_000)), ServerOptions(port=0))
    with served as base:  # a real uvicorn server on a free port of 127.0.0.1
        with urllib.request.urlopen(f"{base}/health", timeout=30) as response:
            health = json.loads(response.read())
        assert health["quality_method"] == "cr_fiqa"
        photo = _orl(1, 1).read_bytes()
        status, body = _post(f"{base}/embed", photo)
        assert status == 200, body
        assert len(body["faces"]) == 1
        assert len(body["faces"][0]["embedding"]) == 64
        status, body = _post(f"{base}/quality", photo)
        assert status == 200
        assert body["method"] == "cr_fiqa"
        payload = json.dumps(
            {"a": base64.b64encode(photo).decode(), "b": base64.b64encode(_orl(1, 6).read_bytes()).decode()}
        )
        status, body = _post(f"{base}/verify", payload.encode(), "application/json")
        assert status == 200, body
        assert -1.0 <= body["similarity"] <= 1.0
        status, body = _post(f"{base}/embed", b"this is not an image")
        assert status == 400
        assert body["error"].startswith("image: ")
        blank = io.BytesIO()
        Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(blank, format="PNG")
        status, body = _post(f"{base}/embed", blank.getvalue())
        assert status == 422
        assert "no face" in body["error"]
        status, body = _post(f"{base}/embed", b"\0" * 300_000)
        assert status == 413
        big = io.BytesIO()
        Image.fromarray(np.zeros((1500, 1500, 3), np.uint8)).save(big, format="PNG")
        status, body = _post(f"{base}/embed", big.getvalue())
        assert status == 400
        assert "over the limit" in body["error"]
        status, body = _post(f"{base}/verify", b'{"a": "%%%"}', "application/json")
        assert status == 400
        status, body = _post(f"{base}/nowhere", b"")
        assert status == 404


def test_verify_abstains_below_the_calibrated_quality_floor(tmp_path: Path, quality_model: Path) -> None:
    need(GLINT / "images")
    from qualiface.models import save_calibration

    model = tmp_path / "model.pt"
    model.write_bytes(quality_model.read_bytes())
    save_calibration(model, 0.5, fmr=1e-3, pairs="pairs.csv", extra={"quality_floor": 1e9})
    a, b = sorted((GLINT / "images" / "Tom_Hanks").glob("*.jpg"))[:2]
    result = runner.invoke(app, ["verify", str(a), str(b), "--model", str(model), "--aligned"])
    assert result.exit_code == 0, result.output
    assert "decision    abstain (threshold 0.5000 from calibration)" in result.stdout
    assert result.stdout.count("is below the floor 1e+09") == 2  # an old calibration file: a floor, no scale
    assert "confidence  unavailable" in result.stdout


def test_embed_refuses_a_decompression_bomb_by_name(tmp_path: Path) -> None:
    """A 60-byte PNG declaring 65500 x 65500 pixels beside a real photo: before, decoded in full (12 GiB asked);
    now skipped, named with the reason, and the real photo is still embedded."""
    need(ORL / "s1", SFACE)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(65500, 65500))
    out = tmp_path / "e.npz"
    result = runner.invoke(app, ["embed", str(bomb), str(_orl(1, 1)), "--model", str(SFACE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"skipped {bomb}" in result.stderr
    assert "over the limit of 40,000,000" in result.stderr
    assert len(np.load(out)["embeddings"]) == 1
