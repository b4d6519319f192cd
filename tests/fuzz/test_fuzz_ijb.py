"""Property-based tests of the IJB meta readers: mutated or random meta files read into arrays of the documented
dtypes or raise one IJBMetaError line naming the file, nothing else (profiles in tests/_helpers/fuzz.py;
``-m fuzz`` for the long runs)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _helpers.fuzz import FAST, LONG, mutate
from qualiface.data import ijb
from qualiface.data.ijb import IJBMetaError

#: Each reader with a well-formed seed file in its layout (docs/formats.md, 'IJB meta files').
READERS: dict[str, tuple[Callable[[Path], tuple[np.ndarray, ...]], bytes]] = {
    "face_tid_mid": (ijb.read_face_tid_mid, b"1.jpg 1 1\n2.jpg 1 2\n3.jpg 2 3\n"),
    "name_5pts_score": (
        ijb.read_name_5pts_score,
        b"1.jpg 38.2 51.6 73.5 51.5 56.0 71.7 41.5 92.3 70.7 92.2 0.99\n"
        b"2.jpg 38.0 51.0 73.0 51.0 56.0 71.0 41.0 92.0 70.0 92.0 0.87\n",
    ),
    "template_pair_label": (ijb.read_template_pairs, b"1 2 1\n1 3 0\n2 3 0\n"),
    "template_subject_csv": (
        ijb.read_template_subject_csv,
        b"TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,10,a.jpg\n2,11,b.jpg\n",
    ),
}
#: Bytes an edit inserts: digits, signs, separators, huge ids, non-UTF-8 and non-numbers.
pieces = st.sampled_from(
    (b"0", b"7", b"-", b"+", b" ", b"\t", b",", b"\n", b"\r\n", b"", b"\xff", b"\xc3", b"nan", b"inf", b"1e999",
     b"9223372036854775808", b"99999999999999999999999", b'"', b"\x00", b"_", b".")
)  # fmt: skip
chunks = pieces | st.binary(min_size=1, max_size=4)
edits = st.lists(
    st.tuples(st.sampled_from(("flip", "cut", "insert")), st.integers(0, 1 << 10), chunks),
    min_size=1,
    max_size=5,
)


def _check(name: str, data: bytes) -> None:
    reader = READERS[name][0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"ijbc_{name}.txt"
        path.write_bytes(data)
        try:
            columns = reader(path)
        except IJBMetaError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message
            assert "\n" not in message
            return
    lengths = {len(column) for column in columns}
    assert len(lengths) == 1
    for column in columns:
        assert column.dtype.kind in "Uiuf"
        if column.dtype.kind == "f":
            assert np.isfinite(column).all()


def test_the_seed_files_read() -> None:
    for name, (_, seed) in READERS.items():
        _check(name, seed)


@FAST
@given(st.sampled_from(sorted(READERS)), edits)
def test_mutated_meta_files(name: str, file_edits: list[tuple[str, int, bytes]]) -> None:
    _check(name, mutate(READERS[name][1], file_edits))


@FAST
@given(st.sampled_from(sorted(READERS)), st.binary(max_size=128))
def test_random_bytes(name: str, data: bytes) -> None:
    _check(name, data)


@pytest.mark.fuzz
@LONG
@given(st.sampled_from(sorted(READERS)), edits)
def test_mutated_meta_files_long(name: str, file_edits: list[tuple[str, int, bytes]]) -> None:
    _check(name, mutate(READERS[name][1], file_edits))
