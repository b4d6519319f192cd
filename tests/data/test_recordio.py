"""MXNet RecordIO reader/writer without MXNet: framing, IRHeader, layouts, errors, workers (docs/formats.md,
'RecordIO')."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers.shared_data import SHARED_DATA
from qualiface.data.recordio import (
    IRHeader,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    decode_image,
    frame_record,
    pack_image_folder,
    pack_record,
    read_idx,
    read_property,
    scan_index,
    unpack_record,
)

MAGIC_LE = bytes.fromhex("0a23d7ce")
REAL_DIR = SHARED_DATA / "insightface-small"


def _image_bytes(fmt: str, seed: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(cflag: int, body: bytes) -> bytes:
    """One chunk written by hand (docs/formats.md, 'Framing'): magic, (cflag << 29) | length, body, zero padding to 4
    bytes."""
    return MAGIC_LE + struct.pack("<I", (cflag << 29) | len(body)) + body + b"\0" * ((4 - len(body) % 4) % 4)


def _header(flag: int, label: float, rid: int, id2: int = 0) -> bytes:
    return struct.pack("<IfQQ", flag, label, rid, id2)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    layout = {"bob": ["PNG", "JPEG"], "alice": ["PNG", "PNG", "JPEG"], "carol": ["JPEG"]}
    seed = 0
    for name, fmts in layout.items():
        (root / name).mkdir(parents=True)
        for j, fmt in enumerate(fmts):
            ext = "png" if fmt == "PNG" else "jpg"
            (root / name / f"{j:02d}.{ext}").write_bytes(_image_bytes(fmt, seed))
            seed += 1
    (root / "carol" / ".DS_Store").write_bytes(b"junk")
    return root


@pytest.fixture
def packed(image_folder: Path, tmp_path: Path) -> Path:
    pack_image_folder(image_folder, tmp_path / "rec")
    return tmp_path / "rec"


def test_frame_record_matches_verified_bytes() -> None:
    # an aligned magic splits the record (docs/formats.md, 'Framing'); these are the bytes MXNet 1.9.1's writer
    # produced for "ABCD" + magic + "EFG"
    framed = frame_record(b"ABCD" + MAGIC_LE + b"EFG")
    assert framed == bytes.fromhex("0a23d7ce 04000020 41424344 0a23d7ce 03000060 454647 00")


def test_frame_record_plain_record_has_cflag0_and_padding() -> None:
    framed = frame_record(b"hello")
    assert framed[:4] == MAGIC_LE
    assert struct.unpack("<I", framed[4:8])[0] == 5  # cflag 0
    assert framed[8:] == b"hello\0\0\0"
    assert len(frame_record(b"1234")) == 12  # no padding at a multiple of 4


def test_unaligned_magic_is_not_split() -> None:
    payload = b"A" + MAGIC_LE + b"BCD"
    assert frame_record(payload) == _chunk(0, payload)


def test_pack_record_layout_scalar_and_array() -> None:
    assert pack_record(3, b"img", 7) == _header(0, 3.0, 7) + b"img"
    array = pack_record([5.0, 9.0], b"", 0, id2=1)
    assert array == _header(2, 0.0, 0, 1) + struct.pack("<2f", 5.0, 9.0)
    header, payload = unpack_record(array)
    assert header.flag == 2
    assert header.id2 == 1
    assert payload == b""
    assert isinstance(header.label, np.ndarray)
    assert header.label.dtype == np.float32
    np.testing.assert_array_equal(header.label, [5.0, 9.0])


def test_round_trip_image_folder(image_folder: Path, packed: Path) -> None:
    assert read_property(packed / "property") == (3, 8, 10)
    reader = RecordIOReader(packed / "train.rec", packed / "train.idx")
    assert reader.layout == "insightface"
    assert reader.num_classes == 3
    assert len(reader) == 6
    assert reader.image_keys == [1, 2, 3, 4, 5, 6]
    # sorted identities: alice=0, bob=1, carol=2; sorted files within a folder
    expected = [
        (f, c) for c, n in enumerate(["alice", "bob", "carol"]) for f in sorted((image_folder / n).glob("[0-9]*"))
    ]
    for i, (file, cls) in enumerate(expected):
        payload, label = reader[i]
        assert payload == file.read_bytes()
        assert label == cls
        if file.suffix == ".png":
            np.testing.assert_array_equal(decode_image(payload), np.asarray(Image.open(file).convert("RGB")))
    assert reader.identity_ranges() == [(1, 4), (4, 6), (6, 7)]
    header0, payload0 = reader.read(0)
    assert header0.flag == 2
    assert header0.id2 == 1
    np.testing.assert_array_equal(header0.label, [7.0, 10.0])
    assert payload0 == b""


def test_pack_writes_recbuilder_order_and_idx_text(packed: Path) -> None:
    text = (packed / "train.idx").read_text()
    assert text.endswith("\n")
    keys = [int(line.split("\t")[0]) for line in text.splitlines()]
    # images, identity records, then record 0 (docs/formats.md, 'Layouts')
    assert keys == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    pairs = read_idx(packed / "train.idx")
    assert pairs[0] == (1, 0)
    # the header record and identity records are 32 bytes + 8 bytes framing (docs/formats.md, 'Header')
    rec = (packed / "train.rec").read_bytes()
    off0 = dict(pairs)[0]
    assert len(rec) - off0 == 40
    assert rec[off0 : off0 + 8] == MAGIC_LE + struct.pack("<I", 32)
    assert rec[off0 + 8 : off0 + 40] == _header(2, 0.0, 0, 1) + struct.pack("<2f", 7.0, 10.0)


def test_decode_bgr_reverses_channels(packed: Path) -> None:
    payload, _ = RecordIOReader(packed / "train.rec")[0]
    np.testing.assert_array_equal(decode_image(payload, "bgr"), decode_image(payload)[..., ::-1])
    with pytest.raises(ValueError, match="empty image payload"):
        decode_image(b"")


def test_split_record_written_by_hand_is_reassembled(tmp_path: Path) -> None:
    # payload with the magic at aligned offsets 24 and 32 -> chunks cflag 1, 2, 3
    body = _header(0, 4.0, 0) + MAGIC_LE + b"WXYZ" + MAGIC_LE + b"tail!"
    chunks = _chunk(1, body[:24]) + _chunk(2, b"WXYZ") + _chunk(3, b"tail!")
    assert frame_record(body) == chunks
    plain = _header(0, 5.0, 1) + b"ok"
    rec = chunks + _chunk(0, plain)
    (tmp_path / "a.rec").write_bytes(rec)
    (tmp_path / "a.idx").write_text(f"0\t0\n1\t{len(chunks)}\n")
    reader = RecordIOReader(tmp_path / "a.rec")
    assert reader.layout == "im2rec"
    header, payload = reader.read(0)
    assert header == IRHeader(0, 4.0, 0, 0)
    assert payload == MAGIC_LE + b"WXYZ" + MAGIC_LE + b"tail!"
    assert reader.read_raw(1) == plain


def test_writer_reader_round_trip_with_embedded_magic(tmp_path: Path) -> None:
    payloads = [MAGIC_LE * 3, b"x" * 4 + MAGIC_LE, b"", bytes(range(256)) + MAGIC_LE + b"z"]
    with RecordIOWriter(tmp_path / "t.rec", tmp_path / "t.idx") as writer:
        for key, data in enumerate(payloads):
            writer.write(key, [float(key), 0.5], data)
    reader = RecordIOReader(tmp_path / "t.rec", tmp_path / "t.idx")
    for key, data in enumerate(payloads):
        header, payload = reader.read(key)
        assert payload == data
        np.testing.assert_array_equal(header.label, np.array([key, 0.5], dtype=np.float32))


def test_im2rec_layout_keys_from_zero(tmp_path: Path) -> None:
    labels = [2, 0, 1, 0]
    with RecordIOWriter(tmp_path / "w.rec", tmp_path / "w.idx") as writer:
        for key in [2, 0, 3, 1]:  # shuffled write order
            writer.write(key, labels[key], _image_bytes("JPEG", key))
    reader = RecordIOReader(tmp_path / "w.rec", tmp_path / "w.idx")
    assert reader.layout == "im2rec"
    assert reader.header0 is None
    assert reader.num_classes is None
    assert reader.image_keys == [2, 0, 3, 1]  # all keys, file order
    assert [reader.label(i) for i in range(len(reader))] == [1, 2, 0, 0]
    assert decode_image(reader[0][0]).shape == (8, 10, 3)
    with pytest.raises(RecordIOError, match="im2rec layout"):
        reader.identity_ranges()


def test_array_image_labels_use_first_element(tmp_path: Path) -> None:
    # im2rec --pack-label: key 0 has flag > 0 but an image payload, so it is an image, not a header record
    with RecordIOWriter(tmp_path / "x.rec", tmp_path / "x.idx") as writer:
        writer.write(0, [3.0, 1.0], b"img")
        writer.write(1, [2.0, 0.0], b"img2")
    reader = RecordIOReader(tmp_path / "x.rec")
    assert reader.layout == "im2rec"
    assert [reader[0], reader[1]] == [(b"img", 3), (b"img2", 2)]


def test_bad_header_record_raises(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "h.rec", tmp_path / "h.idx") as writer:
        writer.write(0, [3.0, 1.0])  # empty payload, flag > 0, but not a range [N+1, N+1+C]
    with pytest.raises(RecordIOError, match=r"header record 0 label \[3.0, 1.0\]"):
        RecordIOReader(tmp_path / "h.rec")


def test_missing_idx_is_rebuilt_by_scan(packed: Path, tmp_path: Path) -> None:
    (tmp_path / "copy.rec").write_bytes((packed / "train.rec").read_bytes())
    assert scan_index(tmp_path / "copy.rec") == read_idx(packed / "train.idx")
    reader = RecordIOReader(tmp_path / "copy.rec")
    assert reader.idx_path is None
    assert reader.layout == "insightface"
    assert reader[5] == RecordIOReader(packed / "train.rec")[5]
    with pytest.raises(FileNotFoundError, match=r"nope\.idx"):
        RecordIOReader(tmp_path / "copy.rec", tmp_path / "nope.idx")


def test_bad_magic_names_offset(packed: Path) -> None:
    rec = bytearray((packed / "train.rec").read_bytes())
    off = dict(read_idx(packed / "train.idx"))[3]
    rec[off] ^= 0xFF
    (packed / "train.rec").write_bytes(bytes(rec))
    reader = RecordIOReader(packed / "train.rec")
    with pytest.raises(RecordIOError, match=rf"key 3\).*bad magic .* byte offset {off}"):
        reader.read(3)
    with pytest.raises(RecordIOError, match=f"byte offset {off}"):
        scan_index(packed / "train.rec")


def test_truncated_file_raises(packed: Path) -> None:
    rec = (packed / "train.rec").read_bytes()
    off0 = dict(read_idx(packed / "train.idx"))[0]
    (packed / "train.rec").write_bytes(rec[: off0 + 20])
    with pytest.raises(RecordIOError, match=f"truncated record at byte offset {off0}"):
        RecordIOReader(packed / "train.rec")
    (packed / "train.rec").write_bytes(rec[: off0 + 5])
    with pytest.raises(RecordIOError, match="truncated chunk header"):
        RecordIOReader(packed / "train.rec").read(0)


def test_broken_cflag_sequence_raises(tmp_path: Path) -> None:
    (tmp_path / "c.rec").write_bytes(_chunk(1, _header(0, 1.0, 0)) + _chunk(0, b"more"))
    with pytest.raises(RecordIOError, match="invalid cflag 0 for a continuation chunk at byte offset 32"):
        scan_index(tmp_path / "c.rec")


def test_missing_key_names_index(packed: Path) -> None:
    reader = RecordIOReader(packed / "train.rec")
    with pytest.raises(KeyError, match=r"key 99 not in .*train\.idx"):
        reader.read(99)


def test_label_out_of_range_raises(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "r.rec", tmp_path / "r.idx") as writer:
        writer.write(1, 0, b"a")
        writer.write(2, 5, b"b")  # only 1 class declared below
        writer.write(3, [1, 5])
        writer.write(0, [3, 4], id2=1)
    reader = RecordIOReader(tmp_path / "r.rec")
    assert reader[0] == (b"a", 0)
    with pytest.raises(RecordIOError, match=r"key 2\): label 5 out of range \[0, 1\)"):
        reader[1]
    with pytest.raises(RecordIOError, match=r"key 3\): identity range \[1, 5\)"):
        reader.identity_ranges()


def test_empty_identity_folder_raises(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "dave").mkdir()
    (image_folder / "dave" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"dave: empty identity folder"):
        pack_image_folder(image_folder, tmp_path / "out")


def test_writer_rejects_duplicate_key(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "d.rec", tmp_path / "d.idx") as writer:
        writer.write(0, 1, b"a")
        with pytest.raises(ValueError, match="duplicate key 0"):
            writer.write(0, 1, b"b")


def test_pickled_reader_has_no_handle_and_reads_same(packed: Path) -> None:
    reader = RecordIOReader(packed / "train.rec")
    first = reader[2]
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fh is None
    assert clone[2] == first


class _RecDataset(torch.utils.data.Dataset):
    def __init__(self, reader: RecordIOReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        payload, label = self.reader[i]
        info = torch.utils.data.get_worker_info()
        return torch.frombuffer(bytearray(payload), dtype=torch.uint8), label, -1 if info is None else info.id


def _read_in_child(reader: RecordIOReader, i: int, queue: multiprocessing.Queue) -> None:
    queue.put(reader[i])


def test_fork_worker_reads_same_bytes_with_inherited_handle(packed: Path) -> None:
    reader = RecordIOReader(packed / "train.rec")
    expected = reader[4]  # parent opens its handle before forking
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_read_in_child, args=(reader, 4, queue))
    proc.start()
    got = queue.get(timeout=20)
    proc.join(timeout=20)
    assert proc.exitcode == 0
    assert got == expected
    assert reader[1] == RecordIOReader(packed / "train.rec")[1]  # parent's handle still fine


def test_dataloader_workers_read_same_bytes(packed: Path) -> None:
    reader = RecordIOReader(packed / "train.rec")
    expected = [reader[i] for i in range(len(reader))]
    loader = torch.utils.data.DataLoader(_RecDataset(reader), batch_size=None, num_workers=2, shuffle=False)
    batches = list(loader)
    assert {worker for _, _, worker in batches} == {0, 1}  # really read in two worker processes
    assert [(t.numpy().tobytes(), label) for t, label, _ in batches] == expected


def test_real_small_dataset_jpegs_round_trip(tmp_path: Path) -> None:
    tar_path = REAL_DIR / "small_dataset.tar"
    if not tar_path.is_file():
        pytest.skip(f"{tar_path} not available")
    with tarfile.open(tar_path) as tar:
        labels = tar.extractfile("small_dataset/label.txt").read().decode().split("\n")  # type: ignore[union-attr]
        root = tmp_path / "ids"
        files = []
        for line in filter(None, labels):
            rel, label = line.split("\t")
            data = tar.extractfile(f"small_dataset/{rel}").read()  # type: ignore[union-attr]
            folder = root / f"{int(label):04d}"
            folder.mkdir(parents=True)
            (folder / Path(rel).name).write_bytes(data)
            files.append(data)
    summary = pack_image_folder(root, tmp_path / "rec")
    assert (summary.num_images, summary.num_classes) == (10, 10)
    assert read_property(summary.property_path) == (10, 112, 112)
    reader = RecordIOReader(summary.rec_path, summary.idx_path)
    for i, data in enumerate(files):
        assert reader[i] == (data, i)
        assert decode_image(reader[i][0]).shape == (112, 112, 3)


def test_jpeg_fast_path_gives_pillow_pixels_on_real_faces() -> None:
    import io

    from PIL import Image

    root = SHARED_DATA / "glint360k-sample"
    files = sorted(root.rglob("*.jpg"))[:20]
    if not files:
        pytest.skip(f"no JPEG faces under {root}")
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            reference = np.asarray(img.convert("RGB"))
        np.testing.assert_array_equal(decode_image(data, "rgb"), reference)
        np.testing.assert_array_equal(decode_image(data, "bgr"), reference[..., ::-1])
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(b"\xff\xd8\xff\xe0 truncated jpeg")
