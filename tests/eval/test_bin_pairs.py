"""Verification packs (.bin, restricted unpickler) and image-folder pair lists (pairs CSV)."""

import builtins
import io
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from _helpers.shared_data import SHARED_DATA
from qualiface.data.bin_pairs import UnsafePickleError, load_bin
from qualiface.data.pairs import load_pairs_csv

SMALL_LFW = SHARED_DATA / "insightface-small" / "small_lfw.bin"


def _jpeg(seed, size=(112, 112), fmt="JPEG"):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def _decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _py2_pack(blobs, issame):
    """Bytes of a Python-2 protocol-2 pickle of ``(list_of_str, list_of_bool)``, as the old builders wrote it:
    py2 ``str`` elements are BINSTRING opcodes, which Python 3 reads only with ``encoding="bytes"``."""
    out = bytearray(b"\x80\x02](")
    for blob in blobs:
        out += b"T" + struct.pack("<I", len(blob)) + blob
    out += b"e]("
    out += b"".join(b"\x88" if s else b"\x89" for s in issame)
    out += b"e\x86."
    return bytes(out)


# ---------------------------------------------------------------------------- genuine packs


@pytest.fixture(scope="module")
def small_lfw():
    if not SMALL_LFW.is_file():
        pytest.skip(f"shared test data not present: {SMALL_LFW}")
    return SMALL_LFW


def test_reads_the_real_insightface_small_lfw_pack(small_lfw):
    pack = load_bin(small_lfw)
    assert len(pack) == 10
    assert len(pack.images) == 20
    assert pack.issame.dtype == bool
    assert pack.issame.all()
    with small_lfw.open("rb") as handle:  # the reference reader (insightface load_bin) on this trusted file
        bins, issame = pickle.load(handle, encoding="bytes")
    assert list(pack.issame) == list(issame)
    batch = pack.images[0:20]
    assert batch.shape == (20, 112, 112, 3)
    assert batch.dtype == np.uint8
    for i in (0, 7, 19):
        np.testing.assert_array_equal(batch[i], _decode(bins[i].tobytes()))
        np.testing.assert_array_equal(pack.images[i], batch[i])


@pytest.mark.parametrize("protocol", [3, 4, 5])  # 5 = HIGHEST_PROTOCOL: arrays go through numpy's _frombuffer
def test_pack_of_uint8_arrays_round_trips(tmp_path, protocol):
    blobs = [_jpeg(i) for i in range(6)]
    issame = [True, False, True]
    path = tmp_path / "pack.bin"
    # cv2.imencode returns (n, 1) arrays (as in small_lfw.bin); accept plain (n,) ones too
    bins = [np.frombuffer(b, dtype=np.uint8).reshape((-1, 1) if i % 2 else (-1,)).copy() for i, b in enumerate(blobs)]
    assert bins[0].shape == (len(blobs[0]),)
    assert bins[1].shape == (len(blobs[1]), 1)
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    pack = load_bin(path)
    assert pack.issame.tolist() == issame
    assert pack.source == str(path)
    for i, blob in enumerate(blobs):
        np.testing.assert_array_equal(pack.images[i], _decode(blob))


def test_pack_of_bytes_round_trips(tmp_path):
    blobs = [_jpeg(i, fmt="PNG" if i % 2 else "JPEG") for i in range(4)]
    path = tmp_path / "lfw_style.bin"
    path.write_bytes(pickle.dumps((blobs, [False, True]), protocol=pickle.HIGHEST_PROTOCOL))
    pack = load_bin(path)
    assert pack.issame.tolist() == [False, True]
    np.testing.assert_array_equal(pack.images[1], _decode(blobs[1]))
    np.testing.assert_array_equal(pack.images[-1], _decode(blobs[3]))


def test_python2_pack_is_read_with_bytes_encoding(tmp_path):
    blobs = [_jpeg(i) for i in range(4)]
    data = _py2_pack(blobs, [True, False])
    with pytest.raises(UnicodeDecodeError):  # what plain pickle.load does on such a pack (insightface #70)
        pickle.loads(data)
    path = tmp_path / "py2.bin"
    path.write_bytes(data)
    pack = load_bin(path)
    assert pack.issame.tolist() == [True, False]
    np.testing.assert_array_equal(pack.images[2], _decode(blobs[2]))


# ---------------------------------------------------------------------------- malicious and broken packs


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_SystemCall, _Eval])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([payload(marker), _jpeg(0)], [True]), protocol=4))
    refused = r"evil\.bin: refused to load the global (posix\.system|os\.system|nt\.system|builtins\.eval)"
    with pytest.raises(UnsafePickleError, match=refused):
        load_bin(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):  # also a ValueError
        load_bin(path)
    assert not marker.exists()


def test_a_bytes_global_from_python3_protocol2_is_refused(tmp_path):
    # Python 3 pickles bytes at protocol 2 through the global _codecs.encode: not part of a genuine pack
    path = tmp_path / "p2.bin"
    path.write_bytes(pickle.dumps(([_jpeg(0), _jpeg(1)], [True]), protocol=2))
    with pytest.raises(ValueError, match=r"_codecs\.encode"):
        load_bin(path)


def test_truncated_pack(tmp_path):
    data = pickle.dumps(([_jpeg(i) for i in range(4)], [True, False]), protocol=4)
    path = tmp_path / "cut.bin"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.bin: not a readable pickle"):
        load_bin(path)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"bins": []}, "expected a pickled 2-tuple"),
        (([b"x"], [True], 3), "2-tuple"),
        (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
        (([b"a", 5], [True]), "element 1 is a int"),
        (([b"a", b"b"], ["yes"]), r"issame\[0\] is 'yes'"),
        (([np.zeros((2, 2), np.uint8), b"b"], [True]), r"element 0 is an array of dtype uint8 and shape \(2, 2\)"),
        (([b"a", np.zeros(9, np.float32)], [True]), "element 1 is an array of dtype float32"),
        (([b"a", b""], [True]), "element 1 is empty"),
    ],
)
def test_wrong_structure_is_named(tmp_path, obj, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(ValueError, match=message):
        load_bin(path)


def test_non_image_element_is_named_at_load(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(pickle.dumps(([_jpeg(0), b"not an image", _jpeg(1), _jpeg(2)], [True, False]), protocol=4))
    with pytest.raises(ValueError, match=r"junk\.bin: element 1: not an image in a supported format \(JPEG, PNG\)"):
        load_bin(path)


def test_undecodable_image_is_named_at_access(tmp_path):
    good = _jpeg(3)
    path = tmp_path / "cut_jpeg.bin"
    path.write_bytes(pickle.dumps(([_jpeg(0), _jpeg(1), _jpeg(2), good[: len(good) // 3]], [True, False]), protocol=4))
    pack = load_bin(path)  # the header parses
    pack.images[2]
    with pytest.raises(ValueError, match=r"cut_jpeg\.bin: element 3: cannot decode"):
        pack.images[3]
    with pytest.raises(ValueError, match="element 3"):
        pack.images[0:4]


def test_images_of_different_sizes_cannot_be_stacked(tmp_path):
    path = tmp_path / "sizes.bin"
    path.write_bytes(pickle.dumps(([_jpeg(0), _jpeg(1, size=(96, 112))], [True]), protocol=4))
    with pytest.raises(ValueError, match="element 1 is 96x112 pixels"):
        load_bin(path).images[0:2]


def test_missing_pack():
    with pytest.raises(ValueError, match="no such file"):
        load_bin("/nonexistent/lfw.bin")


# ---------------------------------------------------------------------------- pairs CSV + image folder


def _folder(tmp_path, n=6):
    for i in range(n):
        (tmp_path / "img" / f"id{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / f"id{i % 2}" / f"{i}.jpg").write_bytes(_jpeg(i))
    return [f"img/id{i % 2}/{i}.jpg" for i in range(n)]


def test_pairs_csv_with_extra_columns_and_true_false(tmp_path):
    paths = _folder(tmp_path)
    (tmp_path / "pairs.csv").write_text(
        f"path_a,path_b,same,fold\n{paths[0]},{paths[2]},TRUE,0\n{paths[1]},{paths[2]},false,0\n{paths[4]},{paths[0]},1,1\n"
    )
    pairs = load_pairs_csv(tmp_path / "pairs.csv")
    assert pairs.issame.tolist() == [True, False, True]
    assert pairs.folds.tolist() == [0, 0, 1]
    files, index_a, index_b = pairs.unique_images()
    assert len(files) == 4  # paths[0] and paths[2] are used twice
    np.testing.assert_array_equal(files[index_b[1] : index_b[1] + 1][0], _decode(_jpeg(2)))
    np.testing.assert_array_equal(files[int(index_a[2])], _decode(_jpeg(4)))
    assert index_a[0] == index_b[2]


def test_pairs_csv_aliases_and_root(tmp_path):
    paths = _folder(tmp_path / "data")
    (tmp_path / "list.csv").write_text(f"fold,path1,path2,same\n0,{paths[0]},{paths[1]},0\n0,{paths[2]},{paths[4]},1\n")
    pairs = load_pairs_csv(tmp_path / "list.csv", root=tmp_path / "data")
    assert pairs.paths_a[1] == tmp_path / "data" / paths[2]
    assert pairs.issame.tolist() == [False, True]


def test_pairs_csv_errors(tmp_path):
    paths = _folder(tmp_path)
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(f"path_a,path_b,same\n{paths[0]},{paths[1]},1\n{paths[0]},{paths[1]},maybe\n")
    with pytest.raises(ValueError, match=r"p\.csv: line 3: 'same' is 'maybe'"):
        load_pairs_csv(csv_path)
    csv_path.write_text(f"path_a,path_b,same\n{paths[0]},gone/1.jpg,1\n{paths[0]},gone/2.jpg,0\n")
    with pytest.raises(ValueError, match=r"2 image file\(s\) not found[\s\S]*gone/1\.jpg[\s\S]*gone/2\.jpg"):
        load_pairs_csv(csv_path)
    csv_path.write_text(f"photo,other,same\n{paths[0]},{paths[1]},1\n")
    with pytest.raises(ValueError, match="no column for the first image"):
        load_pairs_csv(csv_path)
    csv_path.write_text(f"path_a,path_b,same\n{paths[0]},{paths[1]}\n")
    with pytest.raises(ValueError, match="line 2 has 2 fields"):
        load_pairs_csv(csv_path)
    with pytest.raises(ValueError, match="no such file"):
        load_pairs_csv(tmp_path / "missing.csv")


def test_real_pairs_csv_is_read(tmp_path):
    csv_path = SHARED_DATA / "glint360k-sample" / "pairs_10fold.csv"
    if not csv_path.is_file():
        pytest.skip(f"shared test data not present: {csv_path}")
    pairs = load_pairs_csv(csv_path)
    assert len(pairs) == 6000
    assert int(pairs.issame.sum()) == 3000
    np.testing.assert_array_equal(pairs.folds, np.repeat(np.arange(10), 600))
    files, _, _ = pairs.unique_images()
    assert files[0:1].shape == (1, 112, 112, 3)
