"""Image-folder and CSV-list datasets: labels, decoding, and bad input (errors naming it, or counted skips)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qualiface.data.image_folder import CSVImageDataset, ImageDataError, ImageFolderDataset


def _write_image(path: Path, value: int, size: tuple[int, int] = (6, 4), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    _write_image(root / "bob" / "b1.png", 10)
    _write_image(root / "bob" / "a0.png", 20)
    _write_image(root / "alice" / "x.jpg", 30, mode="L")
    _write_image(root / "carol" / "c.bmp", 40)
    (root / "carol" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_folder_labels_sorted_and_decoded_to_rgb(folder: Path) -> None:
    ds = ImageFolderDataset(folder)
    assert ds.classes == ["alice", "bob", "carol"]
    assert ds.num_classes == 3
    assert [(p.parent.name, p.name) for p, _ in ds.samples] == [
        ("alice", "x.jpg"),
        ("bob", "a0.png"),
        ("bob", "b1.png"),
        ("carol", "c.bmp"),
    ]
    np.testing.assert_array_equal(ds.labels, [0, 1, 1, 2])
    image, label = ds[1]
    assert label == 1
    assert image.dtype == np.uint8
    assert image.shape == (4, 6, 3)  # grey and RGB files both come out RGB (H, W, 3)
    assert image.flags.writeable
    assert tuple(image[0, 0]) == (20, 0, 235)
    assert ds[0][0].shape == (4, 6, 3)
    assert ds.num_skipped == 0


def test_folder_transform(folder: Path) -> None:
    ds = ImageFolderDataset(folder, transform=lambda image: image.shape)
    assert ds[3] == ((4, 6, 3), 2)


def test_empty_identity_folder_is_named_or_skipped(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "dave").mkdir()
    (folder / "dave" / "readme.txt").write_text("x")
    with pytest.raises(ImageDataError, match="dave: empty identity folder"):
        ImageFolderDataset(folder)
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(folder, on_error="skip")
    assert ds.classes == ["alice", "bob", "carol"]
    assert ds.num_skipped == 1
    assert ds.skipped[0].what.endswith("dave")
    assert "dave" in caplog.text


def test_no_images_at_all(tmp_path: Path) -> None:
    with pytest.raises(ImageDataError, match="no identity subfolders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ImageDataError, match="no usable images"):
        ImageFolderDataset(tmp_path, on_error="skip")
    with pytest.raises(ImageDataError, match="not a folder"):
        ImageFolderDataset(tmp_path / "missing")


def test_corrupt_image_named_at_read_time(folder: Path) -> None:
    bad = folder / "bob" / "b1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ImageFolderDataset(folder)  # construction does not decode
    with pytest.raises(ImageDataError, match=r"b1\.png"):
        ds[2]
    with pytest.raises(ImageDataError, match=r"b1\.png"):
        ImageFolderDataset(folder, verify=True)


def test_corrupt_image_skip_is_counted_and_logged(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "bob" / "b1.png").write_bytes(b"not a png at all")
    ds = ImageFolderDataset(folder, on_error="skip")
    with caplog.at_level(logging.WARNING):
        image, label = ds[2]  # replaced by the next decodable item
    assert label == 2
    assert tuple(image[0, 0]) == (40, 0, 215)
    assert ds.num_skipped == 1
    assert "b1.png" in ds.skipped[0].what
    assert "b1.png" in caplog.text
    verified = ImageFolderDataset(folder, on_error="skip", verify=True)
    assert len(verified) == 3
    assert verified.num_skipped == 1


def test_all_images_corrupt_raises_even_when_skipping(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"junk")
    ds = ImageFolderDataset(tmp_path, on_error="skip")
    with pytest.raises(ImageDataError, match="no decodable image"):
        ds[0]


def _csv(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name, value in (("a.png", 1), ("b.png", 2), ("sub/c.png", 3)):
        _write_image(tmp_path / name, value)
    return tmp_path


def test_csv_list_with_header_and_root(images: Path) -> None:
    path = _csv(images, "path,label\na.png,0\n\nsub/c.png,2\nb.png,1\n")
    ds = CSVImageDataset(path)
    assert len(ds) == 3
    assert ds.num_classes == 3
    np.testing.assert_array_equal(ds.labels, [0, 2, 1])
    image, label = ds[1]
    assert label == 2
    assert tuple(image[0, 0]) == (3, 0, 252)
    other = images / "lists"
    other.mkdir()
    moved = other / "list.csv"
    moved.write_text("a.png,0\n")
    assert len(CSVImageDataset(moved, root=images, num_classes=5)) == 1


def test_csv_label_out_of_range_names_the_row(images: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _csv(images, "a.png,0\nb.png,7\n")
    with pytest.raises(ImageDataError, match=r"list\.csv:2: label 7 outside the class range \[0, 3\)"):
        CSVImageDataset(path, num_classes=3)
    with pytest.raises(ImageDataError, match=r"negative\.csv:1: label -1"):
        CSVImageDataset(_csv(images, "a.png,-1\n", "negative.csv"))
    with caplog.at_level(logging.WARNING):
        ds = CSVImageDataset(path, num_classes=3, on_error="skip")
    assert len(ds) == 1
    assert ds.num_skipped == 1
    assert ds.skipped[0].what.endswith("list.csv:2")
    assert "label 7" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,zero\n", r"list\.csv:1: label 'zero' is not an integer"),
        ("a.png\n", r"list\.csv:1: expected 2 fields"),
        ("a.png,0\nmissing.png,1\n", r"list\.csv:2: image file .*missing\.png not found"),
    ],
)
def test_csv_bad_rows_are_named(images: Path, text: str, message: str) -> None:
    with pytest.raises(ImageDataError, match=message):
        CSVImageDataset(_csv(images, text))


def test_csv_empty_and_unreadable(images: Path) -> None:
    with pytest.raises(ImageDataError, match="no usable rows"):
        CSVImageDataset(_csv(images, "path,label\n"))
    with pytest.raises(ImageDataError, match="cannot read the CSV"):
        CSVImageDataset(images / "nope.csv")


def test_csv_corrupt_image_named_at_read_time(images: Path) -> None:
    (images / "b.png").write_bytes(b"broken")
    ds = CSVImageDataset(_csv(images, "a.png,0\nb.png,1\n"))
    assert ds[0][1] == 0
    with pytest.raises(ImageDataError, match=r"b\.png"):
        ds[1]


def test_invalid_on_error(folder: Path) -> None:
    with pytest.raises(ValueError, match="on_error"):
        ImageFolderDataset(folder, on_error="ignore")  # type: ignore[arg-type]
