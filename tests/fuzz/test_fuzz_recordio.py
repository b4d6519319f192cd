"""Property-based tests of the RecordIO reader: a mutated or random ``.rec`` / ``.idx`` opens and reads (every
image record, the identity ranges) or raises one RecordIOError line naming the file, nothing else (profiles in
tests/_helpers/fuzz.py; ``-m fuzz`` for the long runs)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _helpers.fuzz import FAST, LONG, mutate
from qualiface.data.recordio import RecordIOError, RecordIOReader, RecordIOWriter, pack_record


def _seed_pack() -> tuple[bytes, bytes]:
    """An InsightFace-layout pack: 3 images of 2 identities (one with an array label), 2 identity records and the
    header record, one image payload holding the magic (a split record)."""
    with tempfile.TemporaryDirectory() as folder:
        rec, idx = Path(folder) / "t.rec", Path(folder) / "t.idx"
        with RecordIOWriter(rec, idx) as writer:
            writer.write(1, 0, b"\xff\xd8jpeg-ish")
            writer.write(2, [0.0, 7.0], b"ab\x0a\x23\xd7\xcecd" * 3)
            writer.write(3, 1, b"png")
            writer.write(4, [1, 3])
            writer.write(5, [3, 4])
            writer.write(0, [4, 6], id2=1)
        return rec.read_bytes(), idx.read_bytes()


SEED_REC, SEED_IDX = _seed_pack()
edits = st.lists(
    st.tuples(st.sampled_from(("flip", "cut", "insert")), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=12)),
    min_size=1,
    max_size=6,
)


labels = st.floats(width=32) | st.lists(st.floats(width=32), min_size=1, max_size=3)


@st.composite
def packs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Well-framed packs of random records: any label (NaN, infinities, huge ranges in a header), an id that is
    mostly the key, any payload; keys in any order."""
    keys = draw(st.lists(st.integers(0, 9), unique=True, max_size=7))
    with tempfile.TemporaryDirectory() as folder:
        rec, idx = Path(folder) / "t.rec", Path(folder) / "t.idx"
        with RecordIOWriter(rec, idx) as writer:
            for key in keys:
                record_id = draw(st.sampled_from((key, key, key, 0, (1 << 64) - 1)))
                payload = draw(st.sampled_from((b"", b"img")))
                writer.write_raw(key, pack_record(draw(labels), payload, record_id))
        return rec.read_bytes(), idx.read_bytes()


@st.composite
def insightface_packs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """InsightFace-layout packs whose numbers are near the right ones: each label, range bound and id is right or
    off by one, a half, NaN, an infinity or huge; a record may be missing."""

    def near(value: int) -> float:
        return draw(st.sampled_from((value, value, value, value + 1, value - 1, value + 0.5, math.nan, math.inf, 1e30)))

    images, classes = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    records = [(key, [near(min(key - 1, classes - 1))] if draw(st.booleans()) else near(0), b"img") for key in
               range(1, images + 1)]  # fmt: skip
    records += [(images + 1 + c, [near(1 + c), near(2 + c)], b"") for c in range(classes)]
    records.append((0, [near(images + 1), near(images + 1 + classes)], b""))
    missing = draw(st.sampled_from([None, *(key for key, _, _ in records)]))
    with tempfile.TemporaryDirectory() as folder:
        rec, idx = Path(folder) / "t.rec", Path(folder) / "t.idx"
        with RecordIOWriter(rec, idx) as writer:
            for key, label, payload in records:
                if key != missing:
                    record_id = key if draw(st.integers(0, 9)) else key + 1
                    writer.write_raw(key, pack_record(label, payload, record_id, id2=1 if key == 0 else 0))
        return rec.read_bytes(), idx.read_bytes()


def _check(rec_bytes: bytes, idx_bytes: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        rec = Path(folder) / "t.rec"
        rec.write_bytes(rec_bytes)
        idx = None
        if idx_bytes is not None:
            idx = Path(folder) / "t.idx"
            idx.write_bytes(idx_bytes)
        try:
            reader = RecordIOReader(rec, idx)
            for index in range(min(len(reader), 64)):
                payload, label = reader[index]
                assert isinstance(payload, bytes)
                assert label >= 0
            if reader.layout == "insightface":
                assert len(reader.identity_ranges()) == reader.num_classes
            reader.close()
        except RecordIOError as exc:
            message = str(exc)
            assert message.startswith((str(rec), str(idx))), message
            assert "\n" not in message


def test_the_seed_pack_reads() -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "t.rec").write_bytes(SEED_REC)
        (Path(folder) / "t.idx").write_bytes(SEED_IDX)
        reader = RecordIOReader(Path(folder) / "t.rec")
        assert [reader[i][1] for i in range(len(reader))] == [0, 0, 1]
        assert reader.identity_ranges() == [(1, 3), (3, 4)]


@FAST
@given(edits, st.booleans())
def test_mutated_rec(rec_edits: list[tuple[str, int, bytes]], with_idx: bool) -> None:
    _check(mutate(SEED_REC, rec_edits), SEED_IDX if with_idx else None)


@FAST
@given(edits)
def test_mutated_idx(idx_edits: list[tuple[str, int, bytes]]) -> None:
    _check(SEED_REC, mutate(SEED_IDX, idx_edits))


@FAST
@given(st.binary(max_size=256), st.binary(max_size=64) | st.none())
def test_random_bytes(rec_bytes: bytes, idx_bytes: bytes | None) -> None:
    _check(rec_bytes, idx_bytes)


@FAST
@given(packs() | insightface_packs())
def test_random_records(pack: tuple[bytes, bytes]) -> None:
    _check(*pack)


@pytest.mark.fuzz
@LONG
@given(packs() | insightface_packs())
def test_random_records_long(pack: tuple[bytes, bytes]) -> None:
    _check(*pack)


@pytest.mark.fuzz
@LONG
@given(edits, edits, st.booleans())
def test_mutated_rec_and_idx_long(rec_edits, idx_edits, with_idx: bool) -> None:  # type: ignore[no-untyped-def]
    _check(mutate(SEED_REC, rec_edits), mutate(SEED_IDX, idx_edits) if with_idx else None)
