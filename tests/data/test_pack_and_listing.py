"""``data pack`` and the image folder read their input within bounds: a truncated JPEG is refused naming the file
(never packed), a folder that cannot be listed is one error naming it (not a PermissionError traceback), and a
binary ``property`` file is one error naming it.

The tests run as root here, where a mode of 000 does not stop reading, so an unreadable folder is made by making
``Path.iterdir`` raise what the kernel raises for it (EACCES, with the folder as the file name)."""

from __future__ import annotations

import errno
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.data.image_folder import ImageDataError, ImageFolderDataset
from qualiface.data.recordio import pack_image_folder, read_property
from qualiface.errors import EXIT_INPUT, InputError
from qualiface.imaging import ImageDecodeError

runner = CliRunner()


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    for index, name in enumerate(("ann", "bob")):
        (root / name).mkdir(parents=True)
        (root / name / "0.jpg").write_bytes(_jpeg(index))
    return root


def _header_only(data: bytes) -> bytes:
    """The JPEG up to its start-of-scan header: a valid header, no entropy-coded data."""
    return data[: data.index(b"\xff\xda") + 14]


def test_pack_refuses_a_truncated_jpeg_naming_it(faces: Path, tmp_path: Path) -> None:
    truncated = faces / "bob" / "1.jpg"
    truncated.write_bytes(_header_only(_jpeg(7)))
    with Image.open(truncated) as header:  # Pillow opens it: only decoding finds the truncation
        assert header.size == (16, 16)
    with pytest.raises(ImageDecodeError, match=re.escape(f"{truncated}: ")):
        pack_image_folder(faces, tmp_path / "out")
    assert not (tmp_path / "out" / "train.rec").exists()
    result = runner.invoke(app, ["data", "pack", str(faces), str(tmp_path / "out"), "--size", "16"])
    assert result.exit_code == EXIT_INPUT
    assert f"error: {truncated}: " in result.output
    assert "Traceback" not in result.output


def _unreadable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` behaves as a folder without read permission: listing it raises EACCES naming it."""
    iterdir = Path.iterdir

    def refuse(self: Path) -> Iterator[Path]:
        if self == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refuse)


def test_an_unreadable_identity_folder_is_one_error_naming_it(faces: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _unreadable(monkeypatch, faces / "bob")
    with pytest.raises(ImageDataError, match=re.escape(f"{faces / 'bob'}: cannot read the folder (Permission denied)")):
        ImageFolderDataset(faces)
    with pytest.raises(InputError, match=re.escape(f"{faces / 'bob'}: cannot read the folder (Permission denied)")):
        pack_image_folder(faces, faces.parent / "out")


def test_an_unreadable_identity_folder_is_skipped_under_on_error_skip(
    faces: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _unreadable(monkeypatch, faces / "bob")
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(faces, on_error="skip")
    assert dataset.classes == ["ann"]
    assert [s.what for s in dataset.skipped] == [str(faces / "bob")]
    assert "cannot read the folder" in dataset.skipped[0].reason


def test_an_unreadable_root_through_the_cli_is_one_line(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unreadable(monkeypatch, faces)
    result = runner.invoke(app, ["data", "pack", str(faces), str(tmp_path / "out"), "--size", "16"])
    assert result.exit_code == EXIT_INPUT
    assert f"error: {faces}: cannot read the folder (Permission denied)" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01", b"1,2\n", b"1,2,x\n", b""])
def test_a_bad_property_file_names_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "property"
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(f"{path}: expected '<num_classes>,<height>,<width>'")):
        read_property(path)


def test_a_property_file_with_more_lines_reads_its_first(tmp_path: Path) -> None:
    path = tmp_path / "property"
    path.write_bytes(b"93431,112,112\n5179510\nshuffled\n2021-01-01 00:00:00\n")  # insightface's shuffle tool
    assert read_property(path) == (93431, 112, 112)
