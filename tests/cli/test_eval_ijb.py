"""``qualiface eval ijb`` on tiny synthetic IJB meta folders written in tmp_path."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.data.ijb import load_ijb_1n_lists, load_ijb_meta
from qualiface.eval.ijb import ijb_identification, ijb_verification, pool_templates

runner = CliRunner()


def make_ijb(root: Path, seed: int = 0, n_templates: int = 36, dim: int = 8):
    """IJB-C-like meta folder (stills and video frames, shared subjects) and matching features."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, dim))
    subject_of, rows = {}, []
    media = 100
    for t in range(1, n_templates + 1):
        subject_of[t] = int(rng.integers(0, 10))
        for _ in range(rng.integers(1, 4)):
            media += 1
            rows += [(t, media)] * (1 if rng.random() < 0.5 else int(rng.integers(2, 4)))
    tids = np.array([r[0] for r in rows])
    n = len(rows)
    subj = np.array([subject_of[t] for t in tids])
    feats = (centers[subj] + rng.normal(size=(n, dim))) * rng.uniform(0.5, 2, (n, 1))
    flips = (centers[subj] + rng.normal(size=(n, dim))) * rng.uniform(0.5, 2, (n, 1))
    faceness = np.round(rng.uniform(0.1, 1.0, n), 3)
    meta = root / "IJBC" / "meta"
    meta.mkdir(parents=True)
    (meta / "ijbc_face_tid_mid.txt").write_text("".join(f"{i + 1}.jpg {t} {m}\n" for i, (t, m) in enumerate(rows)))
    (meta / "ijbc_name_5pts_score.txt").write_text(
        "".join(f"{i + 1}.jpg " + " ".join(["50.0"] * 10) + f" {s}\n" for i, s in enumerate(faceness))
    )
    first_of = {}
    for t, s in subject_of.items():
        first_of.setdefault(s, t)
    gallery = sorted(first_of.values())
    probes = [t for t in subject_of if t not in set(gallery)]
    pairs = [(g, p, int(subject_of[g] == subject_of[p])) for g in gallery for p in probes]
    (meta / "ijbc_template_pair_label.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pairs))
    half = len(gallery) // 2
    for name, part in (("G1", gallery[:half]), ("G2", gallery[half:])):
        (meta / f"ijbc_1N_gallery_{name}.csv").write_text(
            "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{subject_of[t]},a.jpg\n" for t in part)
        )
    (meta / "ijbc_1N_probe_mixed.csv").write_text(
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{subject_of[t]},b.jpg\n" for t in probes)
    )
    path = root / "feats.npz"
    np.savez(path, embs=feats.astype(np.float32), embs_f=flips.astype(np.float32))
    return meta, path, feats.astype(np.float32), flips.astype(np.float32)


def test_help_lists_the_options():
    result = runner.invoke(app, ["eval", "ijb", "--help"])
    assert result.exit_code == 0
    for option in ("--preset", "--flip-halves", "--one-to-n", "--legacy-1n", "--no-faceness", "--quality"):
        assert option in result.output


def test_ijb_writes_results_that_match_the_library(tmp_path):
    meta_dir, feats_path, feats, flips = make_ijb(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "ijb", str(feats_path), str(meta_dir), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "TAR:" in result.output
    for name in ("ijb_11.json", "ijb_11.csv", "roc.csv", "roc.png", "report.md"):
        assert (out / name).is_file(), name
    data = json.loads((out / "ijb_11.json").read_text())
    meta = load_ijb_meta(meta_dir)
    expected = ijb_verification(
        feats, meta.template_ids, meta.media_ids, meta.pair_t1, meta.pair_t2, meta.pair_labels, flipped=flips,
        faceness=meta.faceness, progress=False,
    )  # fmt: skip
    assert data["tar_at_far"] == {str(k): v for k, v in expected.tar_at_far.items()}
    assert data["n_pairs"] == len(meta.pair_labels)
    assert data["pooling"]["use_faceness"] is True
    roc_lines = (out / "roc.csv").read_text().splitlines()
    assert roc_lines[0] == "fpr,tpr,threshold"
    assert len(roc_lines) == len(data["roc_fpr"]) + 1


def test_flip_halves_layout_gives_the_same_numbers(tmp_path):
    meta_dir, _, feats, flips = make_ijb(tmp_path, seed=1)
    halves = tmp_path / "halves.npy"
    np.save(halves, np.concatenate([feats, flips], axis=1))
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    args = ["--no-progress", "--no-plot"]
    ok = runner.invoke(app, ["eval", "ijb", str(halves), str(meta_dir), "-o", str(out_a), "--flip-halves", *args])
    assert ok.exit_code == 0, ok.output
    plain = tmp_path / "plain.npy"
    flipped = tmp_path / "flipped.npy"
    np.save(plain, feats)
    np.save(flipped, flips)
    ok = runner.invoke(
        app, ["eval", "ijb", str(plain), str(meta_dir), "-o", str(out_b), "--flipped", str(flipped), *args]
    )
    assert ok.exit_code == 0, ok.output
    a = json.loads((out_a / "ijb_11.json").read_text())
    b = json.loads((out_b / "ijb_11.json").read_text())
    assert a["tar_at_far"] == b["tar_at_far"]
    assert a["auc"] == b["auc"]


def test_preset_and_overrides_change_the_pooling(tmp_path):
    meta_dir, feats_path, _, _ = make_ijb(tmp_path, seed=2)
    out = tmp_path / "m"
    ok = runner.invoke(
        app,
        ["eval", "ijb", str(feats_path), str(meta_dir), "-o", str(out), "--preset", "magface", "--no-plot"],
    )
    assert ok.exit_code == 0, ok.output
    data = json.loads((out / "ijb_11.json").read_text())
    assert data["score_type"] == "arccos"
    assert data["pooling"]["normalize_media"] is True
    out2 = tmp_path / "n"
    ok = runner.invoke(
        app,
        ["eval", "ijb", str(feats_path), str(meta_dir), "-o", str(out2), "--no-faceness", "--normalize-images"],
    )
    assert ok.exit_code == 0, ok.output
    pooling = json.loads((out2 / "ijb_11.json").read_text())["pooling"]
    assert pooling["use_faceness"] is False
    assert pooling["normalize_images"] is True


def test_one_to_n_and_legacy_outputs(tmp_path):
    meta_dir, feats_path, feats, flips = make_ijb(tmp_path, seed=3)
    out = tmp_path / "out"
    ok = runner.invoke(
        app,
        ["eval", "ijb", str(feats_path), str(meta_dir), "-o", str(out), "--one-to-n", "--legacy-1n", "--no-plot"],
    )
    assert ok.exit_code == 0, ok.output
    assert "1:N rank-1" in ok.output
    data = json.loads((out / "ijb_1n.json").read_text())
    meta = load_ijb_meta(meta_dir)
    templates = pool_templates(feats, meta.template_ids, meta.media_ids, flipped=flips, faceness=meta.faceness)
    lists = load_ijb_1n_lists(meta_dir)
    expected = ijb_identification(templates, lists.galleries, lists.probe)
    assert data["rank"] == {str(k): v for k, v in expected.rank.items()}
    assert set(data["galleries"]) == {"G1", "G2"}
    assert (out / "ijb_1n.csv").is_file()
    assert json.loads((out / "ijb_1n_legacy.json").read_text())["protocol"].startswith("legacy")


def test_save_scores_and_float64(tmp_path):
    meta_dir, feats_path, _, _ = make_ijb(tmp_path, seed=4)
    out = tmp_path / "out"
    ok = runner.invoke(
        app,
        ["eval", "ijb", str(feats_path), str(meta_dir), "-o", str(out), "--save-scores", "--float64", "--no-plot"],
    )
    assert ok.exit_code == 0, ok.output
    with np.load(out / "scores.npz") as saved:
        assert saved["score"].dtype == np.float64
        assert saved["score"].shape == saved["label"].shape
        assert np.all(np.abs(saved["score"]) <= 1 + 1e-12)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ("rows", "feature rows, but"),
        ("nan", "non-finite"),
        ("no_flip", "needs the flipped features"),
        ("pair", "template 999"),
    ],
)
def test_bad_inputs_exit_with_a_clear_message(tmp_path, mutate, message):
    meta_dir, feats_path, feats, flips = make_ijb(tmp_path, seed=5)
    if mutate == "rows":
        np.savez(feats_path, embs=feats[:-1], embs_f=flips[:-1])
    elif mutate == "nan":
        feats[3, 1] = np.nan
        np.savez(feats_path, embs=feats, embs_f=flips)
    elif mutate == "no_flip":
        np.savez(feats_path, embs=feats)
    else:
        pairs = meta_dir / "ijbc_template_pair_label.txt"
        pairs.write_text(pairs.read_text() + "999 1 0\n")
    result = runner.invoke(app, ["eval", "ijb", str(feats_path), str(meta_dir), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output


def test_missing_meta_folder_exits_with_a_clear_message(tmp_path):
    _, feats_path, _, _ = make_ijb(tmp_path, seed=6)
    result = runner.invoke(app, ["eval", "ijb", str(feats_path), str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "ijbc_face_tid_mid.txt" in result.output


def _write_quality_meta(root: Path, d: dict) -> Path:
    """Meta folder (face_tid_mid, name_5pts_score, pair labels) for tests/_helpers/ijb_quality.py's set."""
    meta = root / "IJBC" / "meta"
    meta.mkdir(parents=True)
    rows = zip(d["names"], d["tids"], d["mids"], strict=True)
    (meta / "ijbc_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m in rows))
    (meta / "ijbc_name_5pts_score.txt").write_text(
        "".join(f"{n} " + " ".join(["50.0"] * 10) + " 0.9\n" for n in d["names"])
    )
    pairs = zip(d["t1"], d["t2"], d["labels"], strict=True)
    (meta / "ijbc_template_pair_label.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pairs))
    return meta


def test_cr_fiqa_qs_preset_reads_crfiqa_score_files_and_matches_eval_ijbc_qs(tmp_path):
    from _helpers.ijb_quality import eval_ijbc_qs_reference, ijb_quality_set

    d = ijb_quality_set(seed=7)
    meta_dir = _write_quality_meta(tmp_path, d)
    feats = tmp_path / "feats.npz"
    np.savez(feats, embs=d["feats"], embs_f=d["flipped"])
    order = np.random.default_rng(0).permutation(len(d["names"]))  # a score file in its own order, with paths
    scores = tmp_path / "CRFIQAL_IJBC.txt"
    scores.write_text("".join(f"IJBC/loose_crop/{d['names'][i]} {float(d['quality'][i])!r}\n" for i in order))
    out = tmp_path / "qs"
    base = ["eval", "ijb", str(feats), str(meta_dir), "--no-progress", "--no-plot", "--float64"]
    ok = runner.invoke(app, [*base, "-o", str(out), "--preset", "cr_fiqa_qs", "--quality", str(scores)])
    assert ok.exit_code == 0, ok.output
    assert "1 template(s) have only weight-0 (lowest-quality) images" in ok.output
    fars = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    _, _, ref_tar, ref_auc = eval_ijbc_qs_reference(
        d["feats"], d["flipped"], d["tids"], d["mids"], d["quality"], d["t1"], d["t2"], d["labels"], fars
    )
    data = json.loads((out / "ijb_11.json").read_text())
    assert data["tar_at_far"] == pytest.approx({str(k): v for k, v in ref_tar.items()}, abs=1e-12)
    assert data["auc"] == pytest.approx(ref_auc, abs=1e-12)
    assert data["pooling"]["quality_weights"] == "minmax"
    assert data["pooling"]["use_faceness"] is False

    raw = tmp_path / "raw"
    np.save(tmp_path / "q.npy", d["quality"] - d["quality"].min() + 0.5)  # positive scores in face_tid_mid order
    ok = runner.invoke(
        app, [*base, "-o", str(raw), "--preset", "cr_fiqa_qs", "--quality", str(tmp_path / "q.npy"),
              "--quality-weights", "raw"],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    raw_data = json.loads((raw / "ijb_11.json").read_text())
    assert raw_data["pooling"]["quality_weights"] == "raw"
    assert raw_data["auc"] != pytest.approx(data["auc"], abs=1e-9)


def test_quality_inputs_are_checked(tmp_path):
    from _helpers.ijb_quality import ijb_quality_set

    d = ijb_quality_set(seed=8)
    meta_dir = _write_quality_meta(tmp_path, d)
    feats = tmp_path / "feats.npz"
    np.savez(feats, embs=d["feats"], embs_f=d["flipped"])
    base = ["eval", "ijb", str(feats), str(meta_dir), "--no-progress", "--no-plot", "-o", str(tmp_path / "o")]
    result = runner.invoke(app, [*base, "--preset", "cr_fiqa_qs"])
    assert result.exit_code == 2
    assert "--preset cr_fiqa_qs weights images by their quality: give the scores with --quality" in result.output
    partial = tmp_path / "partial.txt"
    partial.write_text("".join(f"x/{n} 0.5\n" for n in d["names"][1:]))
    result = runner.invoke(app, [*base, "--quality", str(partial)])
    assert result.exit_code == 2
    assert f"no quality score for 1 image(s) of the meta list, first: {d['names'][0]}" in result.output
    result = runner.invoke(app, [*base, "--quality", str(partial), "--quality-weights", "rank"])
    assert result.exit_code == 2
    assert "--quality-weights 'rank' is unknown" in result.output


def test_quality_from_any_method_as_qualiface_quality_writes_it(tmp_path):
    """``qualiface quality``'s CSV (file, face, score, ...), in its own order, weights the templates exactly as the
    same scores given in face_tid_mid order."""
    from _helpers.ijb_quality import ijb_quality_set

    d = ijb_quality_set(seed=9)
    meta_dir = _write_quality_meta(tmp_path, d)
    feats = tmp_path / "feats.npz"
    np.savez(feats, embs=d["feats"], embs_f=d["flipped"])
    order = np.random.default_rng(1).permutation(len(d["names"]))
    table = tmp_path / "quality.csv"
    rows = [f"loose_crop/{d['names'][i]},0,{float(d['quality'][i])!r},,magface,embedding_norm\n" for i in order]
    table.write_text("file,face,score,scaled,method,source\n" + "".join(rows))
    np.save(tmp_path / "q.npy", d["quality"])
    base = ["eval", "ijb", str(feats), str(meta_dir), "--no-progress", "--no-plot", "--float64", "--preset", "adaface"]
    by_name = runner.invoke(app, [*base, "-o", str(tmp_path / "a"), "--quality", str(table)])
    assert by_name.exit_code == 0, by_name.output
    in_order = runner.invoke(app, [*base, "-o", str(tmp_path / "b"), "--quality", str(tmp_path / "q.npy")])
    assert in_order.exit_code == 0, in_order.output
    a = json.loads((tmp_path / "a" / "ijb_11.json").read_text())
    b = json.loads((tmp_path / "b" / "ijb_11.json").read_text())
    assert a["auc"] == b["auc"]
    assert a["tar_at_far"] == b["tar_at_far"]
    unweighted = runner.invoke(app, [*base, "-o", str(tmp_path / "c")])
    assert unweighted.exit_code == 0, unweighted.output
    assert json.loads((tmp_path / "c" / "ijb_11.json").read_text())["auc"] != pytest.approx(a["auc"], abs=1e-9)
    table.write_text("file,face,score\n" + "".join(f"{n},0,0.5\n" for n in d["names"][1:]))
    missing = runner.invoke(app, [*base, "-o", str(tmp_path / "d"), "--quality", str(table)])
    assert missing.exit_code == 2
    assert f"no quality score for 1 image(s) of the meta list, first: {d['names'][0]}" in missing.output
