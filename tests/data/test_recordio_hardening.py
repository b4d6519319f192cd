"""RecordIO inputs are bounded and checked before they are trusted: header record 0's image and class counts
against the index, every record's id against the key it was read under, and the ``.idx`` text itself; each failure
is one RecordIOError line naming the file and the key or line (docs/formats.md, 'RecordIO')."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.data.recordio import RecordIOError, RecordIOReader, RecordIOWriter, pack_record, read_idx
from qualiface.errors import EXIT_INPUT, InputError

TINY = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
runner = CliRunner()


def _insightface(folder: Path, header: list[float], images: int = 2, identities: int = 1) -> Path:
    """``images`` image records, ``identities`` identity records and a header record 0 with label ``header``."""
    rec = folder / "train.rec"
    with RecordIOWriter(rec, folder / "train.idx") as writer:
        for key in range(1, images + 1):
            writer.write(key, 0, b"img")
        for key in range(images + 1, images + 1 + identities):
            writer.write(key, [1, images + 1])
        writer.write(0, header, id2=1)
    return rec


def test_recordio_error_is_an_input_error() -> None:
    assert issubclass(RecordIOError, InputError)
    assert issubclass(RecordIOError, ValueError)


def test_a_header_claiming_a_billion_images_is_refused_before_any_list_is_built(tmp_path: Path) -> None:
    """In a process limited to 3 GiB of address space: a list of 2^30 keys is 8 GiB of pointers alone (before the
    check, this died with MemoryError, or took the machine's memory without the limit)."""
    rec = _insightface(tmp_path, [2.0**30, 2.0**30 + 128])  # float32-exact: its spacing at 2^30 is 128
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from qualiface.data.recordio import RecordIOReader
        try:
            RecordIOReader({str(rec)!r})
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith(
        f"RecordIOError {rec} (key 0): header record 0 claims {2**30 - 1} images and 128 identity records"
    ), message
    assert message.endswith(f"but {tmp_path / 'train.idx'} holds 4 records")


def test_a_class_count_beyond_the_identity_records_is_refused(tmp_path: Path) -> None:
    rec = _insightface(tmp_path, [3.0, 2.0**25])  # 2^25 - 3 classes: a 16 GiB head at 128-d
    with pytest.raises(RecordIOError, match=r"claims 2 images and 33554429 identity records \(keys 1\.\.33554431\)"):
        RecordIOReader(rec)


def test_a_key_the_header_implies_must_be_in_the_index(tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    with RecordIOWriter(rec, tmp_path / "train.idx") as writer:
        writer.write(1, 0, b"img")
        writer.write(5, 0, b"img")  # key 2 missing; the count alone (4 records for 2 images + 1 identity) fits
        writer.write(3, [1, 3])
        writer.write(0, [3.0, 4.0], id2=1)
    with pytest.raises(
        RecordIOError, match=r"\(key 0\): header record 0 claims keys 1\.\.3, but image key 2 is not in"
    ):
        RecordIOReader(rec)


def test_a_record_whose_id_is_not_its_key_is_refused(tmp_path: Path) -> None:
    rec = tmp_path / "w.rec"
    with RecordIOWriter(rec, tmp_path / "w.idx") as writer:
        writer.write(0, 0, b"first")
        writer.write_raw(1, pack_record(1, b"second", record_id=7))
    reader = RecordIOReader(rec)
    assert reader[0] == (b"first", 0)
    with pytest.raises(RecordIOError, match=re.escape(f"{rec} (key 1): the record at byte offset")) as info:
        reader[1]
    assert "has id 7, not its key 1" in str(info.value)


def test_a_shuffled_index_does_not_read_the_wrong_images(tmp_path: Path) -> None:
    rec = _insightface(tmp_path, [4.0, 5.0], images=3)
    idx = tmp_path / "train.idx"
    offsets = dict(read_idx(idx))
    offsets[1], offsets[2] = offsets[2], offsets[1]
    idx.write_text("".join(f"{key}\t{offset}\n" for key, offset in offsets.items()))
    reader = RecordIOReader(rec)
    with pytest.raises(RecordIOError, match=r"\(key 1\): the record at byte offset \d+ has id 2, not its key 1"):
        reader[0]
    assert reader[2] == (b"img", 0)


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (b"\xff\xfe\x00\x01\x02\n", 1, "(not UTF-8 text)"),
        (b"0\t0\n1\t\xc3\x28\n", 2, "(not UTF-8 text)"),
        (b"0\t0\n" + b"7" * 1_000_000, 2, "line longer than 128 bytes"),
        (b"0\t0\n-1\t8\n", 2, "expected '<key>\\t<offset>', got '-1\\t8'"),
        (b"1_0\t0\n", 1, "got '1_0\\t0'"),
        (b"0 \t 0\n", 1, "expected '<key>\\t<offset>'"),
        (b"18446744073709551616\t0\n", 1, "does not fit the 64-bit record id"),
        (b"0\t0\n0\t8\n", 2, "duplicate key 0"),
    ],
    ids=["binary", "bad-utf8", "long-line", "negative", "underscore", "spaces", "beyond-uint64", "duplicate"],
)
def test_a_malformed_idx_names_the_file_and_line(tmp_path: Path, content: bytes, line: int, words: str) -> None:
    idx = tmp_path / "bad.idx"
    idx.write_bytes(content)
    with pytest.raises(RecordIOError, match=re.escape(f"{idx}:{line}: ")) as info:
        read_idx(idx)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_a_lying_header_through_qualiface_train_is_one_line_and_exit_2(tmp_path: Path) -> None:
    rec = _insightface(tmp_path, [1000.0, 1001.0])  # before: a KeyError traceback at the first batch
    result = runner.invoke(
        app,
        ["train", str(TINY), "--set", "data.source=recordio", "--set", f"data.path={rec}",
         "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == EXIT_INPUT, result.output
    assert f"error: {rec} (key 0): header record 0 claims" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("bound", [math.nan, math.inf, 1.5])
def test_identity_and_header_ranges_must_be_integer_keys(tmp_path: Path, bound: float) -> None:
    """Found by tests/fuzz/test_fuzz_recordio.py: int(NaN) raised ValueError, int(inf) OverflowError, 1.5 read as 1."""
    rec = tmp_path / "train.rec"
    with RecordIOWriter(rec, tmp_path / "train.idx") as writer:
        writer.write(1, 0, b"img")
        writer.write(2, [bound, 2.0])
        writer.write(0, [2.0, 3.0], id2=1)
    with pytest.raises(RecordIOError, match=re.escape(f"{rec} (key 2): identity range [")):
        RecordIOReader(rec).identity_ranges()
    _insightface(tmp_path, [2.0, 3.0 + bound])
    with pytest.raises(RecordIOError, match=re.escape(f"{rec}: header record 0 label [2.0, ")):
        RecordIOReader(rec)
