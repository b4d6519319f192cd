"""A model with a learned threshold (a qualiface ``model.pt`` of a UniTSFace head: the tests' tiny_cnn at 16x16,
random weights, flip fusion as UniTSFace's) through the CLI: ``verify`` does not decide with the learned threshold
unless ``--threshold learned``; ``calibrate`` measures its FMR and FNMR on the pairs with the features verify uses
(checked against a NumPy reference on the flip-fused embeddings) and stores them; ``info`` (text and JSON) shows
them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _helpers.tiny_backbone import TinyCNN, registered
from qualiface.cli.app import app
from qualiface.models import load_model

runner = CliRunner()
SIDE = 16  # the model's input; 112 / 16 = 7 pixels a side per input pixel


def _write_model(path: Path, threshold: float | None) -> Path:
    """The model file, with ``threshold`` as its UniTSFace head's learned one (``None``: a head without one)."""
    torch.manual_seed(0)
    backbone = TinyCNN(input_size=SIDE, embedding_dim=64)
    preprocessing = {**backbone.preprocessing.to_dict(), "flip_fusion": "sum"}  # UniTSFace fuses f(x) + f(flip x)
    torch.save(
        {
            "format": "qualiface.model/1",
            "backbone": "tiny_cnn",
            "backbone_kwargs": {"input_size": SIDE, "embedding_dim": 64},
            "embedding_dim": 64,
            "preprocessing": preprocessing,
            "state_dict": backbone.eval().state_dict(),
            "head": {"name": "unitsface", "num_classes": 10, **({} if threshold is None else {"threshold": threshold})},
            "head_state": None,
            "step": 1,
        },
        path,
    )
    return path


def _cosines(embeddings: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e = embeddings.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", e[a], e[b])


@pytest.fixture(scope="module", autouse=True)
def _tiny_cnn() -> Iterator[None]:
    with registered():
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, _tiny_cnn: None) -> dict:
    """12 aligned crops (16x16 pixels blown up to 112x112), 30 labelled pairs, and the model whose learned
    threshold is the median similarity of the pairs (so that both error rates are measured, neither 0 nor 1)."""
    folder = tmp_path_factory.mktemp("learned")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (12, SIDE, SIDE, 3), dtype=np.uint8)
    images = small.repeat(112 // SIDE, axis=1).repeat(112 // SIDE, axis=2)  # aligned 112x112 crops
    files = []
    for i, image in enumerate(images):
        files.append(folder / f"{i:02d}.png")
        Image.fromarray(image).save(files[-1])
    a = rng.integers(0, 12, 30)
    b = (a + rng.integers(1, 12, 30)) % 12
    same = np.arange(30) % 3 == 0
    model = _write_model(folder / "model.pt", 0.0)
    fused = load_model(model).embed(images, flip=True)  # the features verify compares: f(x) + f(flip x)
    scores = _cosines(fused, a, b)
    threshold = float(np.round(np.median(scores), 6))
    _write_model(model, threshold)
    pairs = folder / "pairs.csv"
    rows = [f"{files[i].name},{files[j].name},{int(s)}\n" for i, j, s in zip(a, b, same, strict=True)]
    pairs.write_text("path1,path2,same\n" + "".join(rows))
    return {
        "folder": folder,
        "model": model,
        "pairs": pairs,
        "files": files,
        "threshold": threshold,
        "scores": scores,
        "single": _cosines(load_model(model).embed(images), a, b),
        "same": same,
    }


def _verify(*args: str) -> dict:
    result = runner.invoke(app, ["verify", *args, "--aligned", "--json"])
    assert result.exit_code == 0, result.output
    return {**json.loads(result.stdout), "stderr": result.stderr}


def test_verify_decides_with_the_learned_threshold_only_when_asked(setup: dict, tmp_path: Path) -> None:
    model = shutil.copy(setup["model"], tmp_path / "model.pt")  # no calibration next to it
    a, b = map(str, setup["files"][:2])
    plain = _verify(a, b, "-m", str(model))
    assert (plain["decision"], plain["verified"], plain["threshold"], plain["threshold_source"]) == (
        "undecided",
        None,
        None,
        None,
    )
    assert "--threshold learned" in plain["reasons"][0]
    asked = _verify(a, b, "-m", str(model), "--threshold", "learned")
    assert (asked["threshold"], asked["threshold_source"]) == (pytest.approx(setup["threshold"]), "learned")
    assert asked["verified"] is (asked["similarity"] >= setup["threshold"])
    assert "not measured: qualiface calibrate measures its FMR and FNMR" in asked["stderr"]
    text = runner.invoke(app, ["verify", a, b, "-m", str(model), "--aligned", "--threshold", "learned"])
    assert f"(threshold {setup['threshold']:.4f} from learned)" in text.stdout
    info = runner.invoke(app, ["info", str(model)])
    assert f"learned threshold {setup['threshold']:.3f}: FMR and FNMR not measured: run qualiface calibrate" in (
        info.stdout
    )


def test_calibrate_measures_the_learned_threshold_and_info_shows_it(setup: dict, tmp_path: Path) -> None:
    model = Path(shutil.copy(setup["model"], tmp_path / "model.pt"))
    args = ["calibrate", "-m", str(model), "--pairs", str(setup["pairs"]), "--root", str(setup["folder"])]
    result = runner.invoke(app, [*args, "--fmr", "0.1", "--aligned", "--no-progress"])
    assert result.exit_code == 0, result.output
    t, scores, same = setup["threshold"], setup["scores"], setup["same"]
    fmr, fnmr = float(np.mean(scores[~same] >= t)), float(np.mean(scores[same] < t))
    assert 0 < fmr < 1
    assert 0 < fnmr < 1
    stored = json.loads((tmp_path / "model.pt.qualiface.json").read_text())["learned_threshold"]
    assert stored["threshold"] == pytest.approx(t)
    assert (stored["fmr"], stored["fnmr"]) == (pytest.approx(fmr), pytest.approx(fnmr))
    assert (stored["n_impostor"], stored["n_genuine"], stored["fmr_measurable"]) == (20, 10, True)
    assert stored["false_matches"] == round(fmr * 20)
    single = setup["single"]
    assert (fmr, fnmr) != (np.mean(single[~same] >= t), np.mean(single[same] < t))  # the fused features count
    assert f"learned threshold {t:.3f}: FMR {fmr:.3g}" in result.stderr
    assert "learned threshold's FMR and FNMR" in result.stdout
    assert json.loads(result.stdout[: result.stdout.rindex("}") + 1])["learned_threshold"]["fmr"] == pytest.approx(fmr)
    info = runner.invoke(app, ["info", str(model)])
    assert info.exit_code == 0, info.output
    line = f"learned threshold {t:.3f}: FMR {fmr:.3g} ({round(fmr * 20)} of 20 impostor pairs), FNMR {fnmr:.3g} on "
    assert line + f"{setup['pairs']} (30 pairs)" in info.stdout
    card = json.loads(runner.invoke(app, ["info", str(model), "--json"]).stdout)
    learned = next(x for x in card["thresholds"] if x["kind"] == "learned")
    assert (learned["fmr_measured"], learned["fnmr"]) == (pytest.approx(fmr), pytest.approx(fnmr))
    assert (learned["n_impostor"], learned["n_genuine"], learned["pairs"]) == (20, 10, str(setup["pairs"]))
    # the calibrated threshold decides by default now; the learned one still only when asked
    a, b = map(str, setup["files"][:2])
    assert _verify(a, b, "-m", str(model))["threshold_source"] == "calibration"
    asked = _verify(a, b, "-m", str(model), "--threshold", "learned")
    assert asked["threshold_source"] == "learned"
    assert "not measured" not in asked["stderr"]


def test_a_bad_threshold_word_or_no_learned_threshold_is_one_line(setup: dict, tmp_path: Path) -> None:
    other = _write_model(tmp_path / "plain.pt", None)
    crop = tmp_path / "crop.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(crop)
    result = runner.invoke(
        app, ["verify", str(crop), str(crop), "-m", str(other), "--aligned", "--threshold", "learned"]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: --threshold learned: model ")
    assert errors[0].endswith(
        "has no learned threshold (only UniTSFace learns one); calibrate one (qualiface calibrate) or pass a cosine"
    )
    word = runner.invoke(app, ["verify", str(crop), str(crop), "-m", str(other), "--threshold", "banana"])
    assert word.exit_code == 2
    assert "error: --threshold 'banana': expected a cosine in [-1, 1] or 'learned'" in word.stderr


def test_search_decides_with_the_learned_threshold_only_when_asked(setup: dict, tmp_path: Path) -> None:
    model = shutil.copy(setup["model"], tmp_path / "model.pt")
    gallery = tmp_path / "g.npz"
    common = ["--model", str(model), "--aligned", "--no-progress"]
    enrolled = runner.invoke(app, ["enroll", *map(str, setup["files"][:4]), "--gallery", str(gallery), *common])
    assert enrolled.exit_code == 0, enrolled.output
    probe = str(setup["files"][5])
    plain = runner.invoke(app, ["search", probe, "--gallery", str(gallery), "--json", *common])
    assert plain.exit_code == 0, plain.output
    document = json.loads(plain.stdout)
    assert (document["policy"]["threshold"], document["results"][0]["decision"]["decision"]) == (None, "undecided")
    asked = runner.invoke(
        app, ["search", probe, "--gallery", str(gallery), "--json", "--threshold", "learned", *common]
    )
    assert asked.exit_code == 0, asked.output
    document = json.loads(asked.stdout)
    assert document["policy"]["threshold"] == pytest.approx(setup["threshold"])
    assert document["policy"]["threshold_source"] == "learned"
    best = document["results"][0]
    assert best["decision"]["decision"] == (
        "match" if best["candidates"][0]["similarity"] >= setup["threshold"] else "non-match"
    )
