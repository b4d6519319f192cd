"""IJB meta files are read within int64 and as UTF-8 text: an id beyond int64 or a line that is not text is one
IJBMetaError naming the file and the line (was an OverflowError or a UnicodeDecodeError traceback without the file,
or 'unreadable content')."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.data import ijb
from qualiface.data.ijb import IJBMetaError
from qualiface.errors import EXIT_INPUT, InputError

runner = CliRunner()
BIG = str(1 << 63)  # one past int64's maximum


@pytest.mark.parametrize(
    ("reader", "content", "where", "words"),
    [
        (ijb.read_face_tid_mid, f"a.jpg 1 2\nb.jpg {BIG} 1\n", "line 2, column 2", f"id {BIG} is outside"),
        (ijb.read_face_tid_mid, "a.jpg 1 -9223372036854775809\n", "line 1, column 3", "outside the 64-bit"),
        (ijb.read_template_pairs, f"1 2 1\n3 {BIG} 0\n", "line 2, column 2", f"id {BIG} is outside"),
        (ijb.read_template_subject_csv, f"TEMPLATE_ID,SUBJECT_ID\n1,2\n\n{BIG},3\n", "line 4", f"id {BIG}"),
        (ijb.read_template_subject_csv, f"TEMPLATE_ID,SUBJECT_ID\n1,{BIG}\n", "line 2", "outside the 64-bit"),
        (ijb.read_template_subject_csv, "TEMPLATE_ID,SUBJECT_ID\n1_0,2\n", "line 2", "cannot parse '1_0'"),
        (ijb.read_face_tid_mid, b"a.jpg 1 2\n\xff\xfe.jpg 1 2\n", "line 2", "not UTF-8 text"),
        (ijb.read_template_pairs, b"1 2 1\n\xc3\x28 2 1\n", "line 2", "not UTF-8 text"),
        (ijb.read_template_subject_csv, b"T,S\n1,2\n\xff,1\n", "line 3", "not UTF-8 text"),
        (ijb.read_name_5pts_score, b"\xff " + b" ".join([b"1"] * 11) + b"\n", "line 1", "not UTF-8 text"),
    ],
    ids=[
        "tid-template",
        "tid-media-negative",
        "pairs",
        "csv-template",
        "csv-subject",
        "csv-underscore",
        "tid-binary",
        "pairs-binary",
        "csv-binary",
        "5pts-binary",
    ],
)
def test_a_bad_id_or_line_names_the_file_and_line(
    tmp_path: Path, reader: Callable[[Path], object], content: str | bytes, where: str, words: str
) -> None:
    path = tmp_path / "meta.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(IJBMetaError, match=re.escape(f"{path}: {where}")) as info:
        reader(path)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_ijb_meta_error_is_an_input_error() -> None:
    assert issubclass(IJBMetaError, InputError)


def test_ids_at_the_int64_limits_are_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ijbc_template_pair_label.txt"
    path.write_text(f"{(1 << 63) - 1} {-(1 << 63)} 1\n")
    first, second, labels = ijb.read_template_pairs(path)
    assert first.tolist() == [(1 << 63) - 1]
    assert second.tolist() == [-(1 << 63)]
    assert labels.dtype == np.int8


def test_an_id_beyond_int64_through_eval_ijb_is_one_line(tmp_path: Path) -> None:
    meta = tmp_path / "IJBC" / "meta"
    meta.mkdir(parents=True)
    (meta / "ijbc_face_tid_mid.txt").write_text(f"1.jpg {BIG} 1\n")
    (meta / "ijbc_name_5pts_score.txt").write_text("1.jpg " + " ".join(["1"] * 11) + "\n")
    (meta / "ijbc_template_pair_label.txt").write_text("1 1 1\n")
    features = tmp_path / "features.npy"
    np.save(features, np.ones((1, 4), dtype=np.float32))
    result = runner.invoke(app, ["eval", "ijb", str(features), str(meta), "-o", str(tmp_path / "out"), "--no-plot"])
    assert result.exit_code == EXIT_INPUT, result.output
    assert f"{meta / 'ijbc_face_tid_mid.txt'}: line 1, column 2: id {BIG} is outside" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content", ["", "\n\n", "\n1.jpg 1 2\n"])
def test_empty_and_blank_lines_give_no_numpy_warning(tmp_path: Path, content: str) -> None:
    """Found by tests/fuzz/test_fuzz_ijb.py: np.loadtxt's UserWarnings on empty input and blank lines escaped."""
    path = tmp_path / "ijbc_face_tid_mid.txt"
    path.write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if content.strip():
            assert ijb.read_face_tid_mid(path)[1].tolist() == [1]
        else:
            with pytest.raises(IJBMetaError, match=re.escape(f"{path}: empty file")):
                ijb.read_face_tid_mid(path)


def test_a_landmark_beyond_float32_is_a_non_finite_value_without_a_numpy_warning(tmp_path: Path) -> None:
    """Found by tests/fuzz/test_fuzz_ijb.py: the float32 cast warned 'overflow encountered in cast'."""
    path = tmp_path / "ijbc_name_5pts_score.txt"
    path.write_text("1.jpg 1e39 " + " ".join(["1"] * 10) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(IJBMetaError, match=re.escape(f"{path}: line 1, column 2: non-finite value")):
            ijb.read_name_5pts_score(path)
