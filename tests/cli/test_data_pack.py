"""``qualiface data pack``: an image folder into RecordIO, read back with the library reader."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.data.recordio import RecordIOReader, decode_image


def _folder(root, identities=3, per_identity=2):
    rng = np.random.default_rng(0)
    for i in range(identities):
        (root / f"id{i}").mkdir(parents=True)
        for j in range(per_identity):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"id{i}" / f"{j}.png")
    return root


def test_pack_then_read_back(tmp_path):
    root = _folder(tmp_path / "faces")
    result = CliRunner().invoke(app, ["data", "pack", str(root), str(tmp_path / "out" / "faces.rec"), "--size", "16"])
    assert result.exit_code == 0, result.output
    assert "6 images of 3 identities" in result.output
    reader = RecordIOReader(tmp_path / "out" / "faces.rec", tmp_path / "out" / "faces.idx")
    assert len(reader) == 6
    payload, label = reader[5]
    assert label == 2
    expected = np.asarray(Image.open(root / "id2" / "1.png").convert("RGB"))
    np.testing.assert_array_equal(decode_image(payload), expected)
    assert (tmp_path / "out" / "property").read_text().strip() == "3,16,16"


def test_pack_errors_are_clear_and_leave_no_partial_file(tmp_path):
    root = _folder(tmp_path / "faces")
    (root / "id1" / "broken.jpg").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["data", "pack", str(root), str(tmp_path / "out.rec"), "--size", "16"])
    assert result.exit_code == 2
    assert "broken.jpg" in result.output
    assert not list(tmp_path.glob("out.rec*"))
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    result = CliRunner().invoke(app, ["data", "pack", str(tmp_path / "empty"), str(tmp_path / "e.rec"), "--size", "16"])
    assert result.exit_code == 2
    assert "empty identity folder" in result.output
