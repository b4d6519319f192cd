"""Property-based tests of the verification ``.bin`` reader (its restricted unpickler included): a mutated or
random pack loads, and its images decode, or it raises one ValueError line naming the file (an UnsafePickleError
or an ImageDecodeError among them), nothing else (profiles in tests/_helpers/fuzz.py; ``-m fuzz`` for the long
runs)."""

from __future__ import annotations

import io
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _helpers.fuzz import FAST, LONG, mutate
from qualiface.data.bin_pairs import UnsafePickleError, load_bin, safe_unpickle


def _encoded(fmt: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _seed_packs() -> list[bytes]:
    """Two genuine layouts: bytes elements under protocol 2, and ``cv2.imencode``-like ``(n, 1)`` uint8 arrays
    under protocol 5 (NumPy's out-of-band-free ``_frombuffer`` path)."""
    images = [_encoded("JPEG" if i % 2 else "PNG", i) for i in range(4)]
    arrays = [np.frombuffer(data, dtype=np.uint8).reshape(-1, 1) for data in images]
    return [
        pickle.dumps((images, [True, False]), protocol=2),
        pickle.dumps((arrays, np.array([True, False])), protocol=5),
    ]


SEEDS = _seed_packs()
edits = st.lists(
    st.tuples(st.sampled_from(("flip", "cut", "insert")), st.integers(0, 1 << 12), st.binary(min_size=1, max_size=8)),
    min_size=1,
    max_size=5,
)


def _check(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pack.bin"
        path.write_bytes(data)
        try:
            pairs = load_bin(path)
            for index in range(min(len(pairs.images), 8)):
                image = pairs.images[index]
                assert image.dtype == np.uint8
                assert image.ndim == 3
        except ValueError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message
            assert "\n" not in message


def test_the_seed_packs_load() -> None:
    for seed in SEEDS:
        _check(seed)


def test_a_refused_global_with_a_line_break_in_its_name_is_one_line() -> None:
    """Found by test_mutated_packs_long: a mutated module name 'numpy.\\n' made the refusal two lines."""
    with pytest.raises(UnsafePickleError, match=r"^f\.bin: refused to load the global 'numpy\.\\n\.dtype'") as info:
        safe_unpickle(b"\x80\x04\x8c\x07numpy.\n\x8c\x05dtype\x93.", "f.bin")  # STACK_GLOBAL of 'numpy.\n'
    assert "\n" not in str(info.value)


def test_a_corrupt_pickle_is_one_line_even_when_its_error_quotes_line_breaks() -> None:
    """Found by test_mutated_packs_long: a FLOAT opcode over image bytes made float()'s message quote a CR LF."""
    with pytest.raises(ValueError, match=r"^f\.bin: not a readable pickle") as info:
        safe_unpickle(b"\x80\x02Fx\ry\n.", "f.bin")
    assert "\n" not in str(info.value)
    assert "\r" not in str(info.value)


@FAST
@given(st.sampled_from(SEEDS), edits)
def test_mutated_packs(seed: bytes, pack_edits: list[tuple[str, int, bytes]]) -> None:
    _check(mutate(seed, pack_edits))


@FAST
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@pytest.mark.fuzz
@LONG
@given(st.sampled_from(SEEDS), edits)
def test_mutated_packs_long(seed: bytes, pack_edits: list[tuple[str, int, bytes]]) -> None:
    _check(mutate(seed, pack_edits))
