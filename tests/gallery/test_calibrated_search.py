"""Search with a calibrated model: SFace calibrated on 80 glint360k-sample pairs of folds 0-4 (CLI), a gallery of
aligned Glint crops, then a clean probe (decided, with the calibrated confidence) and a degraded one (abstains
below the calibrated quality floor, as ``qualiface verify`` does)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageFilter
from typer.testing import CliRunner

from _helpers.shared_data import GLINT, SFACE, need
from qualiface.cli.app import app
from qualiface.decisions import DecisionPolicy
from qualiface.models import load_model

runner = CliRunner()
PEOPLE = ("Barack_Obama", "Daniel_Radcliffe", "Drew_Barrymore", "Gwyneth_Paltrow")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of SFace with a calibration (threshold at FMR 5%, confidence, quality scale and floor)."""
    need(SFACE, GLINT / "pairs_10fold.csv")
    folder = tmp_path_factory.mktemp("calibrated")
    model = folder / "sface.onnx"
    model.write_bytes(SFACE.read_bytes())
    with (GLINT / "pairs_10fold.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    chosen = [
        r
        for fold in range(5)
        for label in ("1", "0")
        for r in [x for x in rows if x["same"] == label and int(x["fold"]) == fold][:8]
    ]
    pairs = folder / "pairs.csv"
    pairs.write_text("path1,path2,same\n" + "".join(f"{r['path1']},{r['path2']},{r['same']}\n" for r in chosen))
    args = ["calibrate", "-m", str(model), "--pairs", str(pairs), "--root", str(GLINT), "--fmr", "0.05", "--aligned"]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    return model


def test_search_gives_the_calibrated_confidence_and_abstains_on_a_degraded_probe(calibrated, tmp_path) -> None:
    need(*(GLINT / "images" / p for p in PEOPLE))
    photos = {p: sorted((GLINT / "images" / p).glob("*.jpg")) for p in PEOPLE}
    gallery = tmp_path / "g.npz"
    enrolled = [str(f) for p in PEOPLE for f in photos[p][:3]]
    common = ["--model", str(calibrated), "--aligned", "--no-progress"]
    result = runner.invoke(app, ["enroll", *enrolled, "--gallery", str(gallery), *common])
    assert result.exit_code == 0, result.output
    clean = photos[PEOPLE[1]][3]
    degraded = tmp_path / "degraded.png"
    image = Image.open(clean).convert("RGB").filter(ImageFilter.GaussianBlur(6))
    ImageEnhance.Brightness(image).enhance(0.2).save(degraded)

    found = runner.invoke(app, ["search", str(clean), str(degraded), "--gallery", str(gallery), "--json", *common])
    assert found.exit_code == 0, found.output
    document = json.loads(found.stdout)
    policy = DecisionPolicy.from_model(load_model(calibrated))
    assert policy.quality_floor is not None
    assert document["policy"]["threshold_source"] == "calibration"
    good, poor = document["results"]
    best = good["candidates"][0]
    assert best["identity"] == PEOPLE[1]
    assert good["decision"]["decision"] == ("match" if best["similarity"] >= policy.threshold else "non-match")
    for candidate in good["candidates"]:  # the confidence is the calibrated curve at the candidate's similarity
        assert candidate["confidence"] == pytest.approx(policy.confidence(candidate["similarity"]), abs=1e-9)
    assert good["decision"]["confidence"] == pytest.approx(best["confidence"], abs=1e-6)
    assert good["quality_scaled"] == pytest.approx(policy.scaled_quality(good["quality"]))
    assert poor["quality"] < policy.quality_floor  # blurred and darkened: below the calibrated floor
    assert poor["decision"]["decision"] == "abstain"
    assert poor["identity"] is None
    assert poor["decision"]["reasons"][0].startswith("probe: quality")
    assert "below the floor" in poor["decision"]["reasons"][0]
    assert len(poor["candidates"]) == 4  # still listed
