"""``qualiface detect``: CSV and JSON columns, every face or the largest, failures on stderr, exit codes, and
``--detector`` checked (also on the other photo commands and ``serve``) with a one-line error."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _helpers.shared_data import GLINT, ORL, SFACE, need
from qualiface.cli.app import app
from qualiface.detect.rows import COLUMNS

runner = CliRunner()

LANDMARK_COLUMNS = [
    f"{name}_{axis}" for name in ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth") for axis in "xy"
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An ORL photo, a tight dim grey crop of a Glint face (found by the pad retry), a photo with two pasted Glint
    faces, and a blank image."""
    need(ORL / "s1" / "1.pgm", GLINT / "images")
    folder = tmp_path_factory.mktemp("photos")
    out = {"orl": ORL / "s1" / "1.pgm"}
    grey = np.asarray(Image.open(GLINT / "images" / "Victoria_Beckham" / "10018.jpg").convert("L"))[22:112, 22:90]
    out["tight"] = folder / "tight.png"
    Image.fromarray((grey * 0.6).astype(np.uint8)).resize((120, 159)).save(out["tight"])
    canvas = np.full((300, 500, 3), 90, np.uint8)
    for name, (x, y, s) in {"Victoria_Beckham/10018.jpg": (40, 60, 200), "Tom_Hanks/9768.jpg": (320, 120, 110)}.items():
        face = Image.open(GLINT / "images" / name).convert("RGB").resize((s, s))
        canvas[y : y + s, x : x + s] = np.asarray(face)
    out["two"] = folder / "two.png"
    Image.fromarray(canvas).save(out["two"])
    out["blank"] = folder / "blank.png"
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(out["blank"])
    return out


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_on_stdout_has_every_face_with_named_columns(photos) -> None:
    files = [photos["orl"], photos["tight"], photos["two"], photos["blank"]]
    result = runner.invoke(app, ["detect", *map(str, files), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split(",") == list(COLUMNS)
    rows = _csv(result.stdout)
    assert [r["file"] for r in rows] == [str(photos[k]) for k in ("orl", "tight", "two", "two")]
    assert [r["face_index"] for r in rows] == ["0", "0", "0", "1"]
    assert [r["found_by"] for r in rows] == ["first", "pad", "first", "first"]
    assert (rows[0]["image_width"], rows[0]["image_height"]) == ("92", "112")
    assert (rows[2]["image_width"], rows[2]["image_height"]) == ("500", "300")
    for row in rows:
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert x1 < x2
        assert y1 < y2
        assert 0.6 <= float(row["score"]) <= 1
        points = np.array([float(row[k]) for k in LANDMARK_COLUMNS]).reshape(5, 2)
        assert np.all((points >= [x1, y1]) & (points <= [x2, y2]))  # the landmarks lie in the box
        assert points[0, 0] < points[1, 0]  # left_eye has the smaller x
    # the pasted faces: best score first; each box holds its face
    big, small = sorted(rows[2:], key=lambda r: -float(r["x2"]) + float(r["x1"]))
    for row, (x, y, s) in ((big, (40, 60, 200)), (small, (320, 120, 110))):
        centre = ((float(row["x1"]) + float(row["x2"])) / 2, (float(row["y1"]) + float(row["y2"])) / 2)
        assert x < centre[0] < x + s
        assert y < centre[1] < y + s
    assert f"skipped {photos['blank']}: no_face" in result.stderr
    assert f"note {photos['tight']}: no face on the first pass; found after the 'pad' retry" in result.stderr
    assert "found on retry: 1 (pad 1)" in result.stderr

    largest = runner.invoke(app, ["detect", str(photos["two"]), "--largest", "--no-progress"])
    assert largest.exit_code == 0, largest.output
    assert [(r["face_index"], r["x1"]) for r in _csv(largest.stdout)] == [(big["face_index"], big["x1"])]


def test_json_by_flag_or_by_suffix(photos, tmp_path: Path) -> None:
    args = ["detect", str(photos["orl"]), str(photos["blank"]), "--no-progress", "--detector", "min_size=30"]
    printed = runner.invoke(app, [*args, "--json"])
    assert printed.exit_code == 0, printed.output
    record = json.loads(printed.stdout)
    assert record["detector"]["min_size"] == 30
    assert record["files"] == 2
    assert [f["reason"] for f in record["failures"]] == ["no_face"]
    assert list(record["faces"][0]) == list(COLUMNS)
    out = tmp_path / "boxes.json"
    written = runner.invoke(app, [*args, "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert written.stdout == ""
    assert json.loads(out.read_text())["faces"] == record["faces"]
    again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 2
    assert "exists; pass --overwrite" in again.stderr
    assert runner.invoke(app, [*args, "--out", str(out), "--overwrite"]).exit_code == 0
    csv_out = tmp_path / "boxes.csv"
    assert runner.invoke(app, [*args, "--out", str(csv_out)]).exit_code == 0
    assert _csv(csv_out.read_text())[0]["file"] == str(photos["orl"])


def test_no_face_anywhere_exits_1(photos) -> None:
    result = runner.invoke(app, ["detect", str(photos["blank"]), "--no-progress"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [",".join(COLUMNS)]
    assert "also tried: pad, upscale" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: no face found in any photo"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("score=2", "score_threshold must be a number in [0, 1]"),
        ("colour=red", "unknown key 'colour'"),
        ("retry=zoom", "retry 'zoom' is unknown"),
        ("max_side=10", "max_side must be 0 or an integer >= 32"),
        ("min_size", "expected key=value"),
    ],
)
def test_bad_detector_values_are_one_line_errors(photos, value: str, says: str) -> None:
    need(SFACE)
    commands = (
        ["detect", str(photos["orl"])],
        ["embed", str(photos["orl"]), "-m", str(SFACE), "-o", "e.npz"],
        ["serve", "-m", "missing.onnx"],  # checked before the model is opened
    )
    for command in commands:
        result = runner.invoke(app, [*command, "--detector", value])
        assert result.exit_code == 2, (command, result.output)
        lines = result.stderr.strip().splitlines()  # embed names its model first
        assert "Traceback" not in result.stderr
        assert [line for line in lines if line.startswith("error:")] == lines[-1:]
        assert lines[-1].startswith("error: --detector")
        assert says in lines[-1]


def test_bad_out_suffix_and_conflicting_json(photos, tmp_path: Path) -> None:
    result = runner.invoke(app, ["detect", str(photos["orl"]), "--out", str(tmp_path / "boxes.txt")])
    assert result.exit_code == 2
    assert "use a .csv or .json file" in result.stderr
    result = runner.invoke(app, ["detect", str(photos["orl"]), "--json", "--out", str(tmp_path / "b.csv")])
    assert result.exit_code == 2
    assert "--json writes JSON" in result.stderr
