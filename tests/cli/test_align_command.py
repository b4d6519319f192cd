"""``qualiface align`` and ``qualiface data pack`` on raw photos: photos -> aligned crops -> RecordIO -> training.

Raw photos: Glint360K faces pasted into larger canvases and padded ORL photos (``_helpers.raw_photos``), plus a photo
without a face.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _helpers.raw_photos import blank_photo, make_raw_photos
from _helpers.tiny_backbone import registered
from qualiface.cli.app import app
from qualiface.data.recordio import RecordIOReader, read_property

TINY = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "photos"
    make_raw_photos(root, glint=3, orl=1, per_identity=3)
    blank_photo(root / "s1" / "nobody.png")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_help_names_the_options() -> None:
    result = runner.invoke(app, ["align", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--detector", "--all-faces", "--size", "--format", "--workers", "--no-progress"):
        assert option in result.output
    pack_help = runner.invoke(app, ["data", "pack", "--help"])
    assert "--detect" in pack_help.output


def test_raw_photos_to_align_to_data_pack_to_two_training_steps(photos: Path, tmp_path: Path) -> None:
    """The issue's chain: raw photos -> qualiface align -> qualiface data pack -> qualiface train (2 steps)."""
    aligned = tmp_path / "aligned"
    result = runner.invoke(app, ["align", str(photos), "--out", str(aligned), "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "13 photos: 12 aligned (12 crops written to" in result.output
    assert "1 failed (no_face 1)" in result.output
    crops = sorted(aligned.rglob("*.png"))
    assert len(crops) == 12
    assert all(Image.open(c).size == (112, 112) for c in crops)
    packed = runner.invoke(app, ["data", "pack", str(aligned), str(tmp_path / "train.rec")])
    assert packed.exit_code == 0, packed.output
    assert "packed 12 images of 4 identities" in packed.output
    assert read_property(tmp_path / "property") == (4, 112, 112)
    run = tmp_path / "run"
    overrides = {
        "data.source": "recordio",
        "data.path": str(tmp_path / "train.rec"),
        "data.batch_size": "4",
        "train.steps": "2",
        "schedule.warmup_steps": "1",
        "model.backbone": "tiny_cnn",  # the shipped config's MobileFaceNet costs 20 s on 2 CPU cores for nothing more
        "model.kwargs.input_size": "112",  # the size of the aligned crops
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    with registered():
        trained = runner.invoke(app, ["train", str(TINY), *sets, "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    assert "trained 2 steps" in trained.output
    model = torch.load(run / "model.pt", weights_only=True)
    assert model["step"] == 2


def test_a_rerun_says_how_many_were_skipped(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "crops"
    args = ["align", str(photos / "s1"), "-o", str(out), "--no-progress", "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "4 photos: 0 aligned (0 crops written to" in again.output
    assert "3 skipped (output exists), 1 failed (no_face 1)" in again.output
    rows = _rows(out / "align_report.csv")
    assert [r["status"] for r in rows] == ["skipped", "skipped", "skipped", "failed"]
    assert rows[3]["file"].endswith("nobody.png")


def test_rec_output_takes_identities_from_folder_names(photos: Path, tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    result = runner.invoke(app, ["align", str(photos), "--out", str(rec), "--no-progress", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "12 crops of 4 identities written to" in result.output
    identities = sorted(p.name for p in photos.iterdir())
    rows = [r for r in _rows(tmp_path / "train.align_report.csv") if r["status"] == "ok"]
    reader = RecordIOReader(rec, tmp_path / "train.idx")
    assert len(reader) == len(rows) == 12
    for i, row in enumerate(rows):
        assert reader[i][1] == identities.index(Path(row["file"]).parent.name) == int(row["label"])
    again = runner.invoke(app, ["align", str(photos), "--out", str(rec), "--no-progress"])
    assert again.exit_code == 2
    assert again.output.strip().splitlines()[-1] == f"error: {rec} exists (pass --overwrite to replace it)"


def test_data_pack_on_photos_gives_the_hint_and_packs_them_with_detect(photos: Path, tmp_path: Path) -> None:
    refused = runner.invoke(app, ["data", "pack", str(photos), str(tmp_path / "p.rec")])
    assert refused.exit_code == 2
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {photos} holds 13 images that are not 112x112 aligned crops (e.g. ")
    assert lines[0].endswith(f"run `qualiface align {photos} --out aligned/` first, or pass --detect")
    assert not (tmp_path / "p.rec").exists()
    packed = runner.invoke(
        app, ["data", "pack", str(photos), str(tmp_path / "p.rec"), "--detect", "--no-progress", "--workers", "1"]
    )
    assert packed.exit_code == 0, packed.output
    assert "packed 12 images of 4 identities" in packed.output
    assert (tmp_path / "p.align_report.csv").is_file()
    assert len(RecordIOReader(tmp_path / "p.rec", tmp_path / "p.idx")) == 12


def test_no_face_anywhere_exits_1(tmp_path: Path) -> None:
    blank_photo(tmp_path / "in" / "a.png")
    result = runner.invoke(app, ["align", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 1
    assert "error: no face found in any of the 1 photos" in result.output
    assert (tmp_path / "o" / "align_report.csv").is_file()


def test_bad_options_are_one_line(photos: Path, tmp_path: Path) -> None:
    for extra, words in (
        (["--detector", "score=2"], "score_threshold must be a number in [0, 1]"),
        (["--format", "gif"], "image format 'gif'"),
        (["--size", "100"], "size 100"),
    ):
        result = runner.invoke(app, ["align", str(photos / "s1"), "--out", str(tmp_path / "o"), *extra])
        assert result.exit_code == 2, extra
        assert words in result.output
        assert "Traceback" not in result.output
