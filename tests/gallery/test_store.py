"""The gallery file: round trip, appending, the model check, and hostile files refused in one line, cheaply."""

from __future__ import annotations

import io
import json
import resource
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qualiface.errors import InputError
from qualiface.gallery import (
    GALLERY_FORMAT,
    Gallery,
    GalleryError,
    Weighting,
    add_images,
    check_model,
    load_gallery,
    save_gallery,
)

STAMP = {"model": "m", "model_format": "onnx", "model_sha256": "ab" * 32, "preprocessing": "RGB 112x112"}


def _gallery(n: int = 12, k: int = 4, dim: int = 8, seed: int = 0) -> Gallery:
    rng = np.random.default_rng(seed)
    report = add_images(
        Gallery.empty(STAMP, dim, "cr_fiqa"),
        rng.normal(size=(n, dim)),
        rng.uniform(0.1, 2.0, n),
        [f"person {i % k}" for i in range(n)],
        [f"photos/{i}.jpg" for i in range(n)],
        [bytes([i]) * 32 for i in range(n)],
    )
    return report.gallery


def test_a_gallery_round_trips_and_is_a_plain_npz(tmp_path: Path) -> None:
    gallery = _gallery()
    path = save_gallery(gallery, tmp_path / "sub" / "g.npz")
    back = load_gallery(path)
    for name in ("embeddings", "quality", "identity", "content_sha256", "templates"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gallery, name))
    assert back.identities == gallery.identities
    assert back.files == gallery.files
    assert back.weighting == Weighting()
    assert back.quality_scale == "gallery"
    with np.load(path, allow_pickle=False) as data:  # readable by anyone, without pickle
        header = json.loads(data["header"].tobytes())
    assert header["format"] == GALLERY_FORMAT
    assert header["model"] == STAMP
    assert header["counts"] == {"images": 12, "identities": 4}
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["g.npz"]  # no temporary file left


def test_appending_adds_images_and_identities_and_skips_the_same_image(tmp_path: Path) -> None:
    gallery = _gallery(n=6, k=3)
    rng = np.random.default_rng(9)
    report = add_images(
        gallery,
        rng.normal(size=(3, 8)),
        rng.uniform(0.1, 2.0, 3),
        ["person 0", "newcomer", "person 1"],
        ["again.jpg", "new.jpg", "copy-of-1.jpg"],
        [bytes([20]) * 32, bytes([21]) * 32, bytes([1]) * 32],  # the last is photos/1.jpg's bytes, person 1's
    )
    grown = report.gallery
    assert (grown.n_images, grown.n_identities) == (8, 4)
    assert report.new_identities == ["newcomer"]
    assert report.skipped == [("copy-of-1.jpg", "already enrolled as 'person 1'")]
    assert grown.identities[grown.identity[-1]] == "newcomer"
    assert gallery.n_images == 6  # the input gallery is unchanged
    # the templates are recomputed over all images: person 0 now has three
    assert not np.allclose(grown.templates[0], gallery.templates[0])
    with pytest.raises(InputError, match="already enrolled as 'person 2', not 'person 0'"):
        add_images(grown, rng.normal(size=(1, 8)), None, ["person 0"], ["x.jpg"], [bytes([2]) * 32])


def test_another_model_or_preprocessing_is_refused_in_one_line() -> None:
    gallery = _gallery()
    with pytest.raises(GalleryError, match=r"g.npz: gallery enrolled with model 'm' \(sha256 abababab") as info:
        check_model(gallery, {**STAMP, "model": "other", "model_sha256": "cd" * 32}, "g.npz")
    assert "\n" not in str(info.value)
    with pytest.raises(GalleryError, match="preprocessing"):
        check_model(gallery, {**STAMP, "preprocessing": "BGR 112x112"}, "g.npz")
    check_model(gallery, dict(STAMP), "g.npz")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


def _npy_claiming(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy header claiming ``shape`` followed by a few bytes only."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue() + b"\0" * 64


def _header(path: Path) -> dict:
    return json.loads(np.frombuffer(_members(path)["header.npy"][128:], np.uint8).tobytes())


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_gallery(_gallery(), tmp_path / "good.npz")


def _hostile(saved: Path, tmp_path: Path, **replace: bytes) -> Path:
    members = _members(saved)
    members.update(replace)
    return _write(tmp_path / "bad.npz", members)


def _header_npy(header: dict) -> bytes:
    return _npy(np.frombuffer(json.dumps(header).encode(), np.uint8))


def test_a_member_claiming_a_huge_shape_is_refused_before_allocating(saved: Path, tmp_path: Path) -> None:
    header = load_gallery(saved).header()
    header["files"] = ["f"] * 10**6  # a header that agrees with the huge claim
    bad = _hostile(saved, tmp_path, **{"header.npy": _header_npy(header), "embeddings.npy": _npy_claiming((10**6, 8))})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(GalleryError, match=r"embeddings\.npy claims 32000000 bytes of data") as info:
        load_gallery(bad)
    assert "\n" not in str(info.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB: nothing near 32 MB read
    dims = _hostile(saved, tmp_path, **{"header.npy": _header_npy({**header, "embedding_dim": 10**9})})
    with pytest.raises(GalleryError, match="embedding_dim must be an integer in"):
        load_gallery(dims)


@pytest.mark.parametrize(
    ("member", "payload", "message"),
    [
        ("embeddings.npy", _npy(np.array([{"a": 1}], dtype=object)), "dtype |O, expected <f4"),
        ("identity.npy", _npy(np.zeros(12, np.float64)), "dtype <f8, expected <i8"),
        ("templates.npy", _npy(np.zeros((3, 8), np.float32)), r"shape \(3, 8\), expected \(4, 8\)"),
        ("header.npy", _npy(np.frombuffer(b"{not json", np.uint8)), "header is not valid JSON"),
        ("header.npy", _npy(np.frombuffer(b"[" * 100000 + b"]" * 100000, np.uint8)), "header is not valid JSON"),
        ("quality.npy", b"not an npy file at all", "quality.npy is not a .npy array"),
        ("pickle.npy", _npy(np.zeros(1)), "unexpected: \\['pickle.npy'\\]"),
    ],
)
def test_malformed_members_are_refused_naming_the_file(saved, tmp_path, member, payload, message) -> None:
    bad = _hostile(saved, tmp_path, **{member: payload})
    with pytest.raises(GalleryError, match=message) as info:
        load_gallery(bad)
    assert str(bad) in str(info.value)


def test_header_values_that_disagree_with_the_arrays_are_refused(saved: Path, tmp_path: Path) -> None:
    header = load_gallery(saved).header()
    cases = [
        ({**header, "format": "qualiface.gallery/99"}, "format 'qualiface.gallery/99'"),
        ({**header, "identities": ["a", "a", "b", "c"]}, "names an identity twice"),
        ({**header, "weighting": {"method": "quality"}}, "weighting: expected an object"),
        ({k: v for k, v in header.items() if k != "model"}, "header has no 'model'"),
    ]
    for changed, message in cases:
        with pytest.raises(GalleryError, match=message):
            load_gallery(_hostile(saved, tmp_path, **{"header.npy": _header_npy(changed)}))
    out_of_range = _npy(np.full(12, 7, np.int64))
    with pytest.raises(GalleryError, match="identity index is outside the 4 identities"):
        load_gallery(_hostile(saved, tmp_path, **{"identity.npy": out_of_range}))
    nan = _npy(np.full((12, 8), np.nan, np.float32))
    with pytest.raises(GalleryError, match="embeddings hold NaN"):
        load_gallery(_hostile(saved, tmp_path, **{"embeddings.npy": nan}))


def test_a_compressed_archive_or_a_non_zip_is_refused(saved: Path, tmp_path: Path) -> None:
    deflated = _write(tmp_path / "deflated.npz", _members(saved), zipfile.ZIP_DEFLATED)
    with pytest.raises(GalleryError, match="is compressed or larger than the file"):
        load_gallery(deflated)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(GalleryError, match=r"not a \.npz archive"):
        load_gallery(junk)
    with pytest.raises(FileNotFoundError, match="no such gallery file"):
        load_gallery(tmp_path / "missing.npz")
    with pytest.raises(GalleryError, match="is a folder; a gallery is a file"):
        load_gallery(tmp_path)
