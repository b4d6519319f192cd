"""``qualiface eval report``: one report from the folders of two other eval commands."""

import csv

import numpy as np
from typer.testing import CliRunner

from qualiface.cli.app import app


def _edc_folder(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    label = (np.arange(n) % 3 == 0).astype(int)
    quality = rng.random(n)
    score = np.where(label == 1, 0.2 + 0.5 * quality, 0.0) + 0.1 * rng.standard_normal(n)
    with (tmp_path / "pairs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["score", "label", "q"])
        writer.writerows(zip(score, label, quality, strict=True))
    out = tmp_path / "edc"
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "--out", str(out), "--fmr", "0.01", "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    return out


def _verify_folder(tmp_path):
    rng = np.random.default_rng(1)
    issame = np.repeat([1, 0], 50)
    a = rng.standard_normal((100, 8))
    b = np.where(issame[:, None] == 1, a + 0.3 * rng.standard_normal((100, 8)), rng.standard_normal((100, 8)))
    emb = np.empty((200, 8))
    emb[0::2], emb[1::2] = a, b
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "issame.npy", issame)
    out = tmp_path / "verify"
    args = ["eval", "verify", "--embeddings", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "issame.npy")]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def test_report_puts_metrics_and_plots_of_several_folders_together(tmp_path):
    folders = [_edc_folder(tmp_path), _verify_folder(tmp_path)]
    for suffix in (".md", ".html"):
        out = tmp_path / f"all{suffix}"
        result = CliRunner().invoke(app, ["eval", "report", *map(str, folders), "--out", str(out)])
        assert result.exit_code == 0, result.output
        text = out.read_text()
        assert "edc/rejection_far_0.01.png" in text
        assert "verify/roc.png" in text
        assert "accuracy" in text


def test_report_of_a_folder_without_results_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "no result JSON" in result.output
