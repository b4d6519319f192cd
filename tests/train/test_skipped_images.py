"""One error policy for every training source: ``data.on_error`` raises naming the image, or skips it and the run
reports every skipped file and its reason at the end and in ``run.json``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _helpers.hostile import png_claiming
from qualiface.backbones.base import Preprocessing
from qualiface.config.schema import DataConfig
from qualiface.data.image_folder import Skipped
from qualiface.data.recordio import RecordIOWriter
from qualiface.train import train
from qualiface.train.data import build_train_samples


def _png(value: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _recordio(tmp_path: Path) -> Path:
    rec = tmp_path / "train.rec"
    with RecordIOWriter(rec, tmp_path / "train.idx") as writer:
        writer.write(0, 0, _png(10))
        writer.write(1, 1, png_claiming(30000, 30000))
        writer.write(2, 1, _png(30))
    return rec


def test_a_recordio_bomb_is_named_by_file_and_key(tmp_path: Path) -> None:
    cfg = DataConfig(source="recordio", path=str(_recordio(tmp_path)), num_classes=2)
    samples = build_train_samples(cfg, Preprocessing((3, 16, 16)), 0)
    with pytest.raises(ValueError, match=r"train\.rec key 1: 900,000,000 pixels is over the limit"):
        samples[(0, 1)]


def test_skip_replaces_a_bad_record_by_the_next_and_reports_it(tmp_path: Path) -> None:
    rec = _recordio(tmp_path)
    cfg = DataConfig(source="recordio", path=str(rec), num_classes=2, on_error="skip")
    samples = build_train_samples(cfg, Preprocessing((3, 16, 16)), 0)
    image, label, skipped = samples[(0, 1)]
    assert label == 1  # record 2 (value 30) stands in for record 1
    assert image.shape == (3, 16, 16)
    assert len(skipped) == 1
    assert isinstance(skipped[0], Skipped)
    assert skipped[0].what == f"{rec} key 1"
    assert "over the limit" in skipped[0].reason
    assert samples[(0, 2)][2] == ()


def _folder_with_bad_files(root: Path) -> list[Path]:
    bad = []
    for identity in range(4):
        folder = root / f"id{identity}"
        folder.mkdir(parents=True)
        for k in range(4):
            (folder / f"{k}.png").write_bytes(_png(40 * identity + k))
    bad.append(root / "id1" / "bomb.png")
    bad[-1].write_bytes(png_claiming(30000, 30000))
    bad.append(root / "id2" / "cut.png")
    bad[-1].write_bytes(_png(7, size=64)[:60])
    return bad


@pytest.mark.parametrize("workers", [0, 1])
def test_a_run_lists_every_skipped_file_in_run_json(make_config, tmp_path: Path, workers: int, caplog) -> None:
    bad = _folder_with_bad_files(tmp_path / "faces")
    cfg = make_config(
        data={"source": "image_folder", "path": str(tmp_path / "faces"), "on_error": "skip", "num_workers": workers},
        train={"steps": 3},  # 18 images, batch 8: two steps per epoch, every image read once by step 2
    )
    with caplog.at_level("WARNING"):
        result = train(cfg)
    described = json.loads((result.run_dir / "run.json").read_text())
    summary = described["skipped"]
    assert summary == result.skipped
    assert sorted(item["what"] for item in summary["items"]) == sorted(str(p) for p in bad)
    assert summary["count"] == 2
    assert summary["by_reason"] == {"over the pixel limit": 1, "truncated": 1}
    assert "skipped 2 images" in caplog.text


def test_without_skip_the_run_stops_naming_the_file(make_config, tmp_path: Path) -> None:
    bad = _folder_with_bad_files(tmp_path / "faces")
    cfg = make_config(data={"source": "image_folder", "path": str(tmp_path / "faces")}, train={"steps": 3})
    with pytest.raises(ValueError, match="|".join(str(p).replace(".", r"\.") for p in bad)):
        train(cfg)
