"""Result export, input loaders, plots and reports."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from qualiface.eval.inputs import load_array, load_table
from qualiface.eval.plots import plot_edc, plot_rejection, plot_roc
from qualiface.eval.report import Section, write_report
from qualiface.eval.results import Result


@dataclass
class _Toy(Result):
    accuracy: float
    folds: np.ndarray
    tar: dict = field(default_factory=dict)
    missing: float = float("nan")


def test_result_to_dict_json_and_csv(tmp_path):
    result = _Toy(np.float32(0.5), np.array([0.25, 0.75]), {1e-3: np.float64(0.9)})
    plain = result.to_dict()
    assert plain == {"accuracy": 0.5, "folds": [0.25, 0.75], "tar": {"0.001": 0.9}, "missing": None}
    assert type(plain["accuracy"]) is float
    import json

    assert json.loads(result.to_json(tmp_path / "r.json").read_text()) == plain
    text = result.to_csv(tmp_path / "out.csv").read_text().splitlines()
    assert text[0] == "accuracy,missing"
    assert text[1] == "0.5,"


def test_load_npy_npz_and_csv(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6.0).reshape(3, 2))
    np.savez(tmp_path / "b.npz", scores=np.array([0.1, 0.2]), labels=np.array([1, 0]))
    (tmp_path / "c.csv").write_text("score,label,name\n0.5,1,x\n0.25,0,y\n")
    assert load_array(tmp_path / "a.npy").shape == (3, 2)
    assert load_array(tmp_path / "b.npz", "labels").tolist() == [1, 0]
    table = load_table(tmp_path / "c.csv")
    assert table["label"].dtype == np.int64
    assert table["score"].tolist() == [0.5, 0.25]
    assert table["name"].tolist() == ["x", "y"]
    assert load_array(tmp_path / "c.csv").shape == (2, 2)  # the numeric columns, stacked
    with pytest.raises(ValueError, match="say which one"):
        load_array(tmp_path / "b.npz")


def test_loaders_name_the_file_and_the_bad_row(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match=r"nan\.npy.*row 1, column 0"):
        load_array(tmp_path / "nan.npy")
    (tmp_path / "bad.csv").write_text("score,label\n0.5,1\nnan,0\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*'score'.*row 1"):
        load_table(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("score,label\n0.5,1\n0.3\n")
    with pytest.raises(ValueError, match="line 3"):
        load_table(tmp_path / "ragged.csv")
    np.savez(tmp_path / "k.npz", scores=np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        load_array(tmp_path / "k.npz", "labels")
    with pytest.raises(ValueError, match="no such file"):
        load_table(tmp_path / "absent.csv")


def test_plots_write_pngs(tmp_path):
    fpr = np.array([0.0, 1e-4, 1e-2, 1.0])
    tpr = np.array([0.0, 0.5, 0.9, 1.0])
    for path in (
        plot_roc({"model": (fpr, tpr)}, tmp_path / "roc.png"),
        plot_edc({"q": (fpr, 1 - tpr)}, tmp_path / "edc.png", reference={"random": (fpr, fpr)}, discard_limit=0.2),
        plot_rejection({"scale": (fpr, tpr)}, tmp_path / "rej.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'bad'"):
        plot_roc({"bad": (fpr, tpr[:2])}, tmp_path / "x.png")


@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_report_links_images_and_lists_metrics(tmp_path, suffix):
    image = plot_roc({"m": (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]))}, tmp_path / "plots" / "roc.png")
    result = _Toy(0.975, np.array([1.0]), {"far_1e-3": 0.9})
    path = write_report([Section.from_result("Verification", result, [image])], tmp_path / f"report{suffix}")
    text = path.read_text()
    assert "plots/roc.png" in text
    assert "0.975" in text
    assert "tar.far_1e-3" in text
    assert "folds" not in text  # arrays are not table rows
