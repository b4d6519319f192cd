"""``qualiface.data.photo_dataset``: photos to aligned crops (a folder tree or a RecordIO pack) with a report.

The raw photos are Glint360K faces pasted into larger canvases and ORL photos padded (``_helpers.raw_photos``); the
reference crop of a photo is the library's own detection + alignment (``load_faces`` / ``align_faces``) called
directly on that photo, compared pixel for pixel (PNG is lossless).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _helpers.raw_photos import blank_photo, make_raw_photos, two_face_photo
from qualiface.data import photo_dataset
from qualiface.data.image_folder import read_image
from qualiface.data.photo_dataset import (
    REPORT_COLUMNS,
    NotAlignedError,
    align_photos,
    find_unaligned,
    pack_photos,
)
from qualiface.data.recordio import PackWriter, RecordIOReader, decode_image, read_property
from qualiface.detect.faces import align_detection
from qualiface.detect.options import DetectorOptions
from qualiface.errors import InputError, RunError
from qualiface.use import load_faces


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photos/<identity>/...``: 2 Glint identities (JPEG) and 1 ORL identity (PNG), 2 photos each, plus a
    blank photo in ``s1`` (no face)."""
    root = tmp_path_factory.mktemp("raw") / "photos"
    make_raw_photos(root, glint=2, orl=1, per_identity=2)
    blank_photo(root / "s1" / "blank.png")
    return root


@pytest.fixture(scope="module")
def aligned(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, photo_dataset.AlignReport]:
    out = tmp_path_factory.mktemp("aligned") / "crops"
    return out, align_photos([photos], out, workers=1)


def _report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == REPORT_COLUMNS
        return list(reader)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_crops_mirror_the_tree_and_equal_the_library_alignment(photos: Path, aligned) -> None:
    out, report = aligned
    sources = sorted(p for p in photos.rglob("*") if p.is_file() and p.name != "blank.png")
    for source in sources:
        crop_path = out / source.relative_to(photos).with_suffix(".png")
        assert crop_path.is_file(), crop_path
        reference = load_faces([source])
        assert len(reference) == 1
        np.testing.assert_array_equal(_pixels(crop_path), reference.images[0])
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == sorted(
        s.relative_to(photos).with_suffix(".png") for s in sources
    )
    assert report.count("ok") == len(sources)
    assert report.crops_written == len(sources)


def test_the_report_lists_every_photo_in_order_with_the_no_face_file(photos: Path, aligned) -> None:
    out, report = aligned
    rows = _report(out / "align_report.csv")
    expected = sorted(p for p in photos.rglob("*") if p.is_file())
    assert [Path(r["file"]) for r in rows] == expected
    blank = next(r for r in rows if r["file"].endswith("blank.png"))
    assert (blank["status"], blank["reason"], blank["faces"], blank["outputs"]) == ("failed", "no_face", "0", "")
    assert "blank.png" in blank["detail"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["faces"] == "1" and r["found"] and r["outputs"].endswith(".png") for r in ok)
    summary = report.summary()
    assert f"{len(rows)} photos: {len(ok)} aligned" in summary
    assert "1 failed (no_face 1)" in summary


def test_a_rerun_skips_existing_crops_and_redoes_missing_ones(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "crops"
    first = align_photos([photos / "s1"], out, workers=1)
    assert first.count("ok") == 2
    kept = out / "1.png"
    before = (kept.read_bytes(), os.stat(kept).st_mtime_ns)
    (out / "2.png").unlink()
    again = align_photos([photos / "s1"], out, workers=1)
    assert [(row.file.name, row.status) for row in again.rows] == [
        ("1.png", "skipped"),
        ("2.png", "ok"),
        ("blank.png", "failed"),  # a photo without a crop is tried again
    ]
    assert (kept.read_bytes(), os.stat(kept).st_mtime_ns) == before
    skipped = again.rows[0]
    assert (skipped.reason, skipped.faces, skipped.found, skipped.outputs) == (
        "output_exists",
        1,
        "detected",
        ("1.png",),
    )
    assert "1 skipped" in again.summary()
    redone = align_photos([photos / "s1"], out, workers=1, overwrite=True)
    assert redone.count("skipped") == 0
    assert redone.count("ok") == 2


def test_an_interrupted_run_leaves_whole_crops_and_a_report_and_resumes(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while encoding the third photo: the two crops before it are whole, no partial file is left, the
    report lists what was done; the next run skips those two."""
    from qualiface.data import photo_workers

    out = tmp_path / "crops"
    real = photo_workers.Aligner._encode
    calls = []

    def dies_on_third(self, crop):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, crop)

    monkeypatch.setattr(photo_workers.Aligner, "_encode", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        align_photos([photos], out, workers=1)
    first = sorted(p for p in photos.iterdir())[0].name
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [f"{first}/0.png", f"{first}/1.png", "align_report.csv"]  # no temporary or half-written file
    for crop in out.rglob("*.png"):
        assert _pixels(crop).shape == (112, 112, 3)
    assert [r["status"] for r in _report(out / "align_report.csv")] == ["ok", "ok"]
    monkeypatch.setattr(photo_workers.Aligner, "_encode", real)
    resumed = align_photos([photos], out, workers=1)
    assert [row.status for row in resumed.rows] == ["skipped", "skipped", "ok", "ok", "ok", "ok", "failed"]


def test_two_workers_write_the_same_crops_and_report_as_one(photos: Path, aligned, tmp_path: Path) -> None:
    one, report_one = aligned
    two = tmp_path / "two"
    report_two = align_photos([photos], two, workers=2)
    assert report_two.workers == 2
    assert [(r.file, r.status, r.reason, r.faces, r.outputs) for r in report_two.rows] == [
        (r.file, r.status, r.reason, r.faces, r.outputs) for r in report_one.rows
    ]
    crops = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert crops == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    for crop in crops:
        assert (one / crop).read_bytes() == (two / crop).read_bytes(), crop


def test_rec_output_labels_from_folder_names(photos: Path, tmp_path: Path) -> None:
    rec = tmp_path / "packs" / "train.rec"
    report = align_photos([photos], rec, workers=1)
    identities = sorted(p.name for p in photos.iterdir())
    assert report.pack is not None
    assert report.pack.class_names == tuple(identities)
    reader = RecordIOReader(rec, rec.with_suffix(".idx"))
    rows = [r for r in report.rows if r.status == "ok"]
    assert len(reader) == len(rows) == 6
    for i, row in enumerate(rows):
        payload, label = reader[i]
        assert label == identities.index(row.file.parent.name) == row.label
        assert row.outputs == (f"train.rec#{i + 1}",)
        np.testing.assert_array_equal(decode_image(payload), load_faces([row.file]).images[0])
    assert read_property(rec.parent / "property") == (3, 112, 112)
    csv_rows = _report(tmp_path / "packs" / "train.align_report.csv")
    assert [r["label"] for r in csv_rows if r["status"] == "ok"] == [str(r.label) for r in rows]
    with pytest.raises(FileExistsError, match=r"train\.rec exists"):
        align_photos([photos], rec, workers=1)
    assert align_photos([photos / "s1"], rec, workers=1, overwrite=True).pack.num_classes == 1


def test_an_identity_without_a_face_gets_no_class(photos: Path, tmp_path: Path) -> None:
    blank_photo(tmp_path / "in" / "aaa_nobody" / "x.png")
    report = align_photos([tmp_path / "in", photos / "s1"], tmp_path / "t.rec", workers=1)
    assert report.pack is not None
    assert report.pack.class_names == ("s1",)
    reader = RecordIOReader(tmp_path / "t.rec", tmp_path / "t.idx")
    assert {reader[i][1] for i in range(len(reader))} == {0}
    with pytest.raises(RunError, match="no face found in any of the 1 photos"):
        align_photos([tmp_path / "in"], tmp_path / "none.rec", workers=1)
    assert not (tmp_path / "none.rec").exists()
    assert (tmp_path / "none.align_report.csv").is_file()


def test_all_faces_keeps_the_largest_as_the_stem(tmp_path: Path) -> None:
    photo = two_face_photo(tmp_path / "in" / "pair.png")
    report = align_photos([photo], tmp_path / "out", all_faces=True, workers=1)
    assert report.rows[0].outputs == ("pair.png", "pair_1.png")
    assert report.rows[0].faces == 2
    faces = load_faces([photo], all_faces=True)
    largest = int(np.argmax([d.area for d in faces.detections]))
    np.testing.assert_array_equal(_pixels(tmp_path / "out" / "pair.png"), faces.images[largest])
    np.testing.assert_array_equal(_pixels(tmp_path / "out" / "pair_1.png"), faces.images[1 - largest])
    single = align_photos([photo], tmp_path / "one", workers=1)
    assert single.rows[0].outputs == ("pair.png",)
    assert single.rows[0].faces == 2


def test_another_size_aligns_the_same_detection_on_the_scaled_template(photos: Path, tmp_path: Path) -> None:
    source = photos / "s1" / "1.png"
    report = align_photos([source], tmp_path / "big", size=224, workers=1)
    assert report.rows[0].outputs == ("1.png",)
    detection = load_faces([source]).detections[0]
    expected = align_detection(read_image(source), detection.landmarks, 224)
    np.testing.assert_array_equal(_pixels(tmp_path / "big" / "1.png"), expected)
    with pytest.raises(InputError, match="size 100"):
        align_photos([source], tmp_path / "bad", size=100)


def test_jpeg_output(photos: Path, tmp_path: Path) -> None:
    source = photos / "s1" / "1.png"
    align_photos([source], tmp_path / "j", image_format="jpg", workers=1)
    crop = tmp_path / "j" / "1.jpg"
    assert Image.open(crop).format == "JPEG"
    reference = load_faces([source]).images[0].astype(np.int16)
    assert np.abs(_pixels(crop).astype(np.int16) - reference).mean() < 3.0  # quality 95


def test_refusals_are_one_line_and_write_nothing(photos: Path, tmp_path: Path) -> None:
    clash = tmp_path / "clash"
    (clash / "a").mkdir(parents=True)
    Image.open(photos / "s1" / "1.png").save(clash / "a" / "x.png")
    Image.open(photos / "s1" / "1.png").save(clash / "a" / "x.jpg")
    with pytest.raises(InputError, match=r"x\.jpg and .*x\.png would both be written to"):
        align_photos([clash], tmp_path / "o1")
    with pytest.raises(InputError, match=r"its crop would be written over the photo"):
        align_photos([clash / "a" / "x.png"], clash / "a")
    with pytest.raises(InputError, match="lies inside the input folder"):
        align_photos([photos], photos / "aligned")
    with pytest.raises(InputError, match="no such file"):
        align_photos([tmp_path / "missing"], tmp_path / "o2")
    with pytest.raises(InputError, match="workers"):
        align_photos([photos], tmp_path / "o3", workers=0)
    with pytest.raises(InputError, match="image format 'gif'"):
        align_photos([photos], tmp_path / "o4", image_format="gif")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
    assert not (photos / "aligned").exists()


def test_detector_options_reach_the_detector(photos: Path, tmp_path: Path) -> None:
    """A score threshold above every face's score finds none: the options are the ones used."""
    report = align_photos([photos / "s1"], tmp_path / "o", options=DetectorOptions(score_threshold=1.0), workers=1)
    assert [row.reason for row in report.rows] == ["no_face"] * 3


def test_find_unaligned_and_pack_photos(photos: Path, aligned, tmp_path: Path) -> None:
    found = find_unaligned(photos)
    assert found.count == 7
    assert found.example is not None
    assert found.example.parent.parent == photos
    with pytest.raises(NotAlignedError) as refused:
        pack_photos(photos, tmp_path / "p.rec")
    message = str(refused.value)
    assert "\n" not in message
    assert f"{photos} holds 7 images that are not 112x112 aligned crops (e.g. {found.example} is " in message
    assert f"run `qualiface align {photos} --out aligned/` first, or pass --detect" in message
    assert not (tmp_path / "p.rec").exists()
    crops, _ = aligned
    assert find_unaligned(crops).count == 0
    summary, report = pack_photos(crops, tmp_path / "crops.rec")
    assert report is None
    assert summary.num_images == 6
    summary, report = pack_photos(photos, tmp_path / "p.rec", detect=True, workers=1)
    assert report is not None
    assert summary.num_images == 6
    assert summary.num_classes == 3
    a, b = (
        RecordIOReader(tmp_path / "crops.rec", tmp_path / "crops.idx"),
        RecordIOReader(tmp_path / "p.rec", tmp_path / "p.idx"),
    )
    for i in range(6):
        assert decode_image(a[i][0]).tolist() == decode_image(b[i][0]).tolist()
        assert a[i][1] == b[i][1]


def test_crops_at_another_size_get_the_size_hint(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.new("RGB", (96, 96)).save(tmp_path / "f" / name / "0.png")
    with pytest.raises(NotAlignedError, match=r"\(or --size 96 if they are aligned 96x96 crops\)"):
        pack_photos(tmp_path / "f", tmp_path / "f.rec")
    assert pack_photos(tmp_path / "f", tmp_path / "f.rec", size=96)[0].num_images == 2


def test_pack_writer_needs_contiguous_identities_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with PackWriter(tmp_path / "x.rec") as writer:
        writer.add("a", b"1", (1, 1))
        writer.add("b", b"2", (1, 1))
        with pytest.raises(ValueError, match="identity 'a' added again after 'b'"):
            writer.add("a", b"3", (1, 1))
        writer.add("c", b"4", (1, 1))
    assert writer.summary is not None
    assert writer.summary.class_names == ("a", "b", "c")
    for name in ("x.rec", "x.idx", "property"):
        (tmp_path / name).unlink()
    with pytest.raises(InputError, match="no images"), PackWriter(tmp_path / "x.rec"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []
