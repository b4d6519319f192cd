"""``qualiface eval identify`` with .npz, CSV and TinyFace-style name lists written in tmp_path."""

import json

import numpy as np
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.eval.identification import identification

runner = CliRunner()


def _data(seed=0, n_subjects=20, dim=8, n_probe=40):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_subjects, dim))
    g_labels = np.arange(n_subjects)
    p_labels = rng.integers(0, n_subjects + 5, n_probe)  # labels >= n_subjects have no mate
    gallery = centers[g_labels] + 0.8 * rng.normal(size=(n_subjects, dim))
    probe = np.vstack([centers, rng.normal(size=(5, dim))])[p_labels] + 0.8 * rng.normal(size=(n_probe, dim))
    return gallery, g_labels, probe, p_labels


def test_help():
    result = runner.invoke(app, ["eval", "identify", "--help"])
    assert result.exit_code == 0
    for option in ("--gallery", "--probe", "--distractors", "--fpir", "--rank", "--keep-norm"):
        assert option in result.output


def test_npz_inputs_match_the_library(tmp_path):
    gallery, g_labels, probe, p_labels = _data()
    np.savez(tmp_path / "g.npz", features=gallery, labels=g_labels)
    np.savez(tmp_path / "p.npz", features=probe, labels=p_labels)
    out = tmp_path / "out"
    args = ["eval", "identify", "--gallery", str(tmp_path / "g.npz"), "--probe", str(tmp_path / "p.npz")]
    result = runner.invoke(app, [*args, "-o", str(out), "--rank", "1", "--rank", "5", "--fpir", "0.1", "--normalize"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "identification.json").read_text())
    expected = identification(probe, p_labels, gallery, g_labels, ranks=(1, 5), fpirs=(0.1,), normalize=True)
    assert data["rank"] == {"1": expected.rank[1], "5": expected.rank[5]}
    assert data["dir_at_fpir"]["0.1"] == {str(k): v for k, v in expected.dir_at_fpir[0.1].items()}
    assert "DIR at FPIR 0.1" in result.output
    assert (out / "identification.csv").read_text().splitlines()[0] == "rank,identification_rate"


def test_csv_inputs_with_label_column(tmp_path):
    gallery, g_labels, probe, p_labels = _data(seed=1)
    for name, feats, labels in (("g", gallery, g_labels), ("p", probe, p_labels)):
        header = "labels," + ",".join(f"f{i}" for i in range(feats.shape[1]))
        rows = [f"{lab}," + ",".join(repr(float(v)) for v in row) for lab, row in zip(labels, feats, strict=True)]
        (tmp_path / f"{name}.csv").write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "out"
    args = ["eval", "identify", "--gallery", str(tmp_path / "g.csv"), "--probe", str(tmp_path / "p.csv")]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "identification.json").read_text())
    expected = identification(probe, p_labels, gallery, g_labels)
    assert data["rank"] == {str(k): v for k, v in expected.rank.items()}


def test_tinyface_name_lists_and_distractors(tmp_path):
    gallery, g_labels, probe, p_labels = _data(seed=2)
    mated = p_labels < 20
    probe, p_labels = probe[mated], p_labels[mated]
    np.save(tmp_path / "g.npy", gallery)
    np.save(tmp_path / "p.npy", probe)
    distractors = np.random.default_rng(3).normal(size=(30, gallery.shape[1]))
    np.save(tmp_path / "d.npy", distractors)
    (tmp_path / "g.txt").write_text("".join(f"Gallery_Match/{lab}_{i}.jpg\n" for i, lab in enumerate(g_labels)))
    (tmp_path / "p.txt").write_text("".join(f"Probe/{lab}_{i}.png\n" for i, lab in enumerate(p_labels)))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "eval", "identify", "--gallery", str(tmp_path / "g.npy"), "--probe", str(tmp_path / "p.npy"),
            "--gallery-labels", str(tmp_path / "g.txt"), "--probe-labels", str(tmp_path / "p.txt"),
            "--distractors", str(tmp_path / "d.npy"), "-o", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "identification.json").read_text())
    all_gallery = np.vstack([gallery, distractors])
    all_labels = np.r_[g_labels, np.full(30, -100)]
    expected = identification(probe, p_labels, all_gallery, all_labels)
    assert data["n_distractors"] == 30
    assert data["rank"] == {str(k): v for k, v in expected.rank.items()}


def test_missing_labels_and_bad_names_exit_with_clear_messages(tmp_path):
    gallery, g_labels, probe, p_labels = _data(seed=4)
    np.save(tmp_path / "g.npy", gallery)
    np.savez(tmp_path / "p.npz", features=probe, labels=p_labels)
    args = ["eval", "identify", "--gallery", str(tmp_path / "g.npy"), "--probe", str(tmp_path / "p.npz")]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--gallery-labels" in result.output
    (tmp_path / "g.txt").write_text("a_1.jpg\n" * len(g_labels))
    result = runner.invoke(app, [*args, "--gallery-labels", str(tmp_path / "g.txt"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "g.txt: line 1" in result.output
    np.save(tmp_path / "g.npy", gallery[:-1])
    (tmp_path / "g.txt").write_text("".join(f"{lab}_x.jpg\n" for lab in g_labels))
    result = runner.invoke(app, [*args, "--gallery-labels", str(tmp_path / "g.txt"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "feature rows but labels" in result.output


def test_unit_features_by_default_and_raw_with_keep_norm(tmp_path):
    """Default: rows L2-normalised, then inner products (TinyFace protocol); --keep-norm: raw inner products. The
    rank-1 of each is checked against a float64 loop over the score matrix written here."""
    gallery, g_labels, probe, p_labels = _data(seed=5, n_subjects=30, n_probe=80)
    rng = np.random.default_rng(6)
    gallery = gallery * rng.uniform(0.1, 10.0, size=(len(gallery), 1))  # norms over two decades
    probe = probe * rng.uniform(0.1, 10.0, size=(len(probe), 1))
    np.savez(tmp_path / "g.npz", features=gallery, labels=g_labels)
    np.savez(tmp_path / "p.npz", features=probe, labels=p_labels)

    def rank1(p, g):
        hits = mated = 0
        for row in range(len(p)):
            if p_labels[row] not in g_labels:
                continue
            mated += 1
            scores = [float(np.dot(p[row], g[j])) for j in range(len(g))]
            hits += g_labels[int(np.argmax(scores))] == p_labels[row]
        return hits / mated

    def unit(x):
        return x / np.sqrt((x * x).sum(axis=1, keepdims=True))

    args = ["eval", "identify", "--gallery", str(tmp_path / "g.npz"), "--probe", str(tmp_path / "p.npz")]
    ranks = {}
    for name, extra in (("unit", []), ("raw", ["--keep-norm"])):
        result = runner.invoke(app, [*args, "-o", str(tmp_path / name), "--rank", "1", *extra])
        assert result.exit_code == 0, result.output
        data = json.loads((tmp_path / name / "identification.json").read_text())
        assert data["normalized"] is (name == "unit")
        ranks[name] = data["rank"]["1"]
    assert ranks["unit"] == rank1(unit(probe), unit(gallery))
    assert ranks["raw"] == rank1(probe, gallery)
    assert ranks["unit"] != ranks["raw"]
