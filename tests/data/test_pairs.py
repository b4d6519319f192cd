"""Pair lists as people write them: column names, label words, delimiters, ``columns=`` (qualiface.data.pairs)."""

from pathlib import Path

import numpy as np
import pytest

from qualiface.data.pairs import load_pairs_csv, parse_label
from qualiface.errors import InputError

LABELS = [True, False, True, False]


def _images(root: Path) -> list[str]:
    names = [f"id{i % 2}/{i}.jpg" for i in range(4)]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not decoded by load_pairs_csv")
    return names


def _write(root: Path, header: list[str], values: list[str], sep: str = ",", name: str = "pairs.csv") -> Path:
    files = _images(root)
    lines = [sep.join(header)]
    lines += [sep.join([files[i], files[(i + 1) % 4], values[i]]) for i in range(4)]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _check(pairs, root: Path, labels=LABELS):
    files = _images(root)
    assert pairs.issame.tolist() == labels
    assert pairs.paths_a == [root / f for f in files]
    assert pairs.paths_b == [root / files[(i + 1) % 4] for i in range(4)]


@pytest.mark.parametrize(
    "header",
    [
        ["path_a", "path_b", "same"],
        ["path1", "path2", "issame"],
        ["img1", "img2", "is_same"],
        ["image1", "image2", "label"],
        ["Image 1", "Image 2", "Label"],
        ["file1", "file2", "match"],
        ["file_x", "file_y", "Decision"],
        ["FILE-X", "FILE-Y", "genuine"],
        ["left", "right", "target"],
        ["a", "b", "Same"],
        ["probe", "reference", "mated"],
    ],
)
def test_recognised_column_names(tmp_path, header):
    path = _write(tmp_path, header, ["1", "0", "1", "0"])
    _check(load_pairs_csv(path), tmp_path)


@pytest.mark.parametrize(
    "values",
    [
        ["1", "0", "1", "0"],
        ["true", "false", "TRUE", "False"],
        ["yes", "no", "Yes", "NO"],
        ["Y", "N", "y", "n"],
        ["same", "different", "Same", "Different"],
        ["genuine", "impostor", "Genuine", "imposter"],
        ["match", "non-match", "Match", "nonmatch"],
        ["1.0", "0.0", "1", "0"],
    ],
)
def test_recognised_label_values(tmp_path, values):
    path = _write(tmp_path, ["file_x", "file_y", "Decision"], values)
    _check(load_pairs_csv(path), tmp_path)


@pytest.mark.parametrize(
    ("sep", "name"), [("\t", "pairs.tsv"), (";", "pairs.csv"), ("   ", "pairs.txt"), (" ", "p.txt")]
)
def test_delimiter_is_found_from_the_header(tmp_path, sep, name):
    path = _write(tmp_path, ["img1", "img2", "same"], ["yes", "no", "yes", "no"], sep=sep, name=name)
    _check(load_pairs_csv(path), tmp_path)


def test_tab_separated_paths_may_hold_spaces(tmp_path):
    (tmp_path / "with space").mkdir()
    for name in ("a 1.jpg", "b 2.jpg"):
        (tmp_path / "with space" / name).write_bytes(b"x")
    (tmp_path / "p.tsv").write_text("left\tright\tsame\nwith space/a 1.jpg\twith space/b 2.jpg\tdifferent\n")
    pairs = load_pairs_csv(tmp_path / "p.tsv")
    assert pairs.paths_b == [tmp_path / "with space" / "b 2.jpg"]
    assert pairs.issame.tolist() == [False]


@pytest.mark.parametrize("columns", ["photo,other,verdict", ["photo", "other", "verdict"], "PHOTO, Other ,Verdict"])
def test_columns_names_any_layout(tmp_path, columns):
    path = _write(tmp_path, ["id", "photo", "other", "verdict"][1:], ["yes", "no", "yes", "no"])
    _check(load_pairs_csv(path, columns=columns), tmp_path)


def test_columns_override_recognised_names(tmp_path):
    # a list whose recognised names point at the wrong columns: columns= decides
    files = _images(tmp_path)
    rows = ["a,b,label,first,second,truth"]
    rows += [f"x,y,1,{files[i]},{files[(i + 1) % 4]},{'yes' if LABELS[i] else 'no'}" for i in range(4)]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    _check(load_pairs_csv(tmp_path / "p.csv", columns="first,second,truth", check_files=True), tmp_path)


def test_bom_blank_lines_and_fold_column(tmp_path):
    files = _images(tmp_path)
    rows = "".join(f"{i // 2},{files[i]},{files[3 - i]},{int(i < 2)}\n" for i in range(4))
    text = "\ufefffold,Path1,Path2,SAME\n\n" + rows
    (tmp_path / "p.csv").write_text(text)
    pairs = load_pairs_csv(tmp_path / "p.csv")
    assert pairs.folds.tolist() == [0, 0, 1, 1]
    assert pairs.issame.tolist() == [True, True, False, False]


def test_missing_column_names_the_header_and_the_recognised_names(tmp_path):
    path = _write(tmp_path, ["photo", "other", "same"], ["1", "0", "1", "0"])
    with pytest.raises(InputError) as info:
        load_pairs_csv(path)
    message = str(info.value)
    assert str(path) in message
    assert "no column for the first image" in message
    assert "['photo', 'other', 'same']" in message
    assert "file_x" in message
    assert "--columns" in message


def test_unknown_label_names_file_line_and_value(tmp_path):
    path = _write(tmp_path, ["file_x", "file_y", "Decision"], ["yes", "no", "perhaps", "no"])
    with pytest.raises(InputError, match=r"pairs\.csv: line 4: 'Decision' is 'perhaps'; expected 1/0, true/false"):
        load_pairs_csv(path)


@pytest.mark.parametrize(
    ("columns", "message"),
    [("photo,other", "give three column names"), ("photo,other,nope", "no column 'nope'")],
)
def test_bad_columns_option(tmp_path, columns, message):
    path = _write(tmp_path, ["photo", "other", "verdict"], ["1", "0", "1", "0"])
    with pytest.raises(InputError, match=message):
        load_pairs_csv(path, columns=columns)


def test_same_column_twice_is_refused(tmp_path):
    path = _write(tmp_path, ["photo", "other", "verdict"], ["1", "0", "1", "0"])
    with pytest.raises(InputError, match="must differ"):
        load_pairs_csv(path, columns="photo,photo,verdict")


def test_parse_label_refuses_other_numbers_and_words():
    assert [parse_label(v) for v in ("2", "-1", "maybe", "", "0.5")] == [None] * 5
    assert parse_label(" Non_Match ") is False
    assert parse_label("GENUINE") is True
    assert np.array([parse_label("1"), parse_label("0")]).tolist() == [True, False]


# ---------------------------------------------------------------------------- photos or crops (pair_images)


def _real_list(tmp_path, rows):
    path = tmp_path / "pairs.csv"
    path.write_text("path_a,path_b,same\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    return load_pairs_csv(path)


def test_aligned_crops_of_the_input_size_are_taken_as_they_are(tmp_path):
    from _helpers.shared_data import GLINT, need
    from qualiface.data.pairs import ImageFiles, pair_images

    need(GLINT / "images")
    files = sorted((GLINT / "images").glob("*/*.jpg"))[:4]
    pairs = _real_list(tmp_path, [(files[0], files[1], 1), (files[2], files[3], 0)])
    prepared = pair_images(pairs)
    assert not prepared.detected
    assert isinstance(prepared.images, ImageFiles)
    assert prepared.keep.tolist() == [True, True]
    assert prepared.warning() is None
    assert "aligned crop" in prepared.reason


def test_photos_are_detected_and_unreadable_files_name_their_dropped_pair(tmp_path):
    from _helpers.shared_data import ORL, need
    from qualiface.data.pairs import pair_images

    need(ORL / "s2" / "2.pgm")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rows = [(ORL / "s1/1.pgm", ORL / "s1/2.pgm", 1), (ORL / "s1/1.pgm", tmp_path / "broken.jpg", 0)]
    rows.append((ORL / "s2/1.pgm", ORL / "s2/2.pgm", "yes"))
    prepared = pair_images(_real_list(tmp_path, rows))
    assert prepared.detected
    assert "92x112" in prepared.reason
    assert prepared.images.shape[1:] == (112, 112, 3)
    assert prepared.keep.tolist() == [True, False, True]
    assert prepared.index_b[1] == -1
    assert [(p.name, r) for p, r, _ in prepared.failures] == [("broken.jpg", "unreadable")]
    assert "1 of 3 pairs left out" in prepared.warning()
    assert "broken.jpg (unreadable)" in prepared.warning()


def test_stated_crops_of_another_size_are_failures_never_resized(tmp_path):
    from _helpers.shared_data import ORL, need
    from qualiface.data.pairs import pair_images

    need(ORL / "s1" / "2.pgm")
    prepared = pair_images(_real_list(tmp_path, [(ORL / "s1/1.pgm", ORL / "s1/2.pgm", 1)]), aligned=True)
    assert not prepared.detected
    assert prepared.keep.tolist() == [False]
    assert {r for _, r, _ in prepared.failures} == {"wrong_size"}
    assert "is 92x112 pixels; an aligned crop is 112x112" in prepared.failures[0][2]
