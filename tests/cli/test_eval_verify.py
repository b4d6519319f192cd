"""``qualiface eval verify`` through Typer's CliRunner: embeddings files, .bin packs and pairs CSVs."""

import csv
import io
import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

import qualiface.cli.eval_verify  # noqa: F401  (registers the command)
from _helpers.reference_verification import t4_vectors
from _helpers.shared_data import SHARED_DATA, need
from qualiface.cli.apps import app
from qualiface.eval.verification import evaluate_verification
from qualiface.models.card import file_sha256

SMALL_LFW = SHARED_DATA / "insightface-small" / "small_lfw.bin"  # 10 pairs, all genuine
SFACE = SHARED_DATA / "models" / "face_recognition_sface_2021dec_fp32_dequantized.onnx"
GLINT = SHARED_DATA / "glint360k-sample"

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["eval", "verify", *map(str, args)])


def _json(out):
    return json.loads((out / "verification.json").read_text())


def test_help_lists_the_three_inputs():
    result = _run("--help")
    assert result.exit_code == 0
    for option in ("--embeddings", "--bin", "--pairs", "--model", "--flip", "--flip-fusion"):
        assert option in result.output


def test_npy_embeddings_and_labels(tmp_path):
    e, issame = t4_vectors()
    np.save(tmp_path / "emb.npy", e)
    np.save(tmp_path / "issame.npy", issame)
    result = _run("--embeddings", tmp_path / "emb.npy", "--labels", tmp_path / "issame.npy", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "Accuracy: 0.90500+-0.02242" in result.output
    data = _json(tmp_path / "out")
    assert data["accuracy"] == evaluate_verification(e, issame).accuracy
    assert data["meta"]["input"] == str(tmp_path / "emb.npy")
    with (tmp_path / "out" / "verification_folds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    assert float(rows[2]["accuracy"]) == 51 / 60
    assert (tmp_path / "out" / "roc.png").stat().st_size > 0
    assert "Accuracy" in (tmp_path / "out" / "report.md").read_text()


def test_npz_with_sides_and_flips(tmp_path):
    rng = np.random.default_rng(0)
    a, b, fa, fb = (rng.normal(size=(300, 8)) for _ in range(4))
    issame = rng.random(300) < 0.5
    b[issame] += 0.5 * a[issame]
    np.savez(tmp_path / "e.npz", embeddings_a=a, embeddings_b=b, flip_a=fa, flip_b=fb, issame=issame)
    result = _run(
        "--embeddings", tmp_path / "e.npz", "--flip-fusion", "concat_normalised", "-o", tmp_path / "o", "--no-plot"
    )
    assert result.exit_code == 0, result.output
    expected = evaluate_verification(a, issame, embeddings_b=b, flip=fa, flip_b=fb, fusion="concat_normalised")
    data = _json(tmp_path / "o")
    assert data["fusion"] == "concat_normalised"
    assert data["fold_accuracies"] == expected.fold_accuracies.tolist()
    assert not (tmp_path / "o" / "roc.png").exists()


def test_csv_embeddings_and_labels(tmp_path):
    e, issame = t4_vectors()
    np.savetxt(tmp_path / "e.csv", e, delimiter=",", header="x,y,z", comments="", fmt="%.17g")
    (tmp_path / "l.csv").write_text("fold,same\n" + "".join(f"{i // 60},{int(s)}\n" for i, s in enumerate(issame)))
    result = _run("--embeddings", tmp_path / "e.csv", "--labels", tmp_path / "l.csv", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert _json(tmp_path / "o")["fold_thresholds"] == evaluate_verification(e, issame).fold_thresholds.tolist()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: [], "exactly one input"),
        (lambda p: ["--embeddings", p / "e.npy", "--bin", p / "x.bin"], "exactly one input"),
        (lambda p: ["--embeddings", p / "nan.npy", "--labels", p / "l.npy"], "nan.npy"),
        (lambda p: ["--embeddings", p / "e.npy", "--labels", p / "one.npy"], "single class"),
        (lambda p: ["--embeddings", p / "e.npy", "--labels", p / "short.npy"], "issame has shape"),
        (lambda p: ["--embeddings", p / "e.npy"], "--labels"),
        (lambda p: ["--embeddings", p / "missing.npy", "--labels", p / "l.npy"], "missing.npy: no such file"),
        (lambda p: ["--bin", p / "x.bin"], "--model"),
        (lambda p: ["--embeddings", p / "e.npy", "--labels", p / "l.npy", "--flip-fusion", "avg"], "unknown"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(tmp_path, make, message):
    e, issame = t4_vectors()
    np.save(tmp_path / "e.npy", e)
    e[5, 0] = np.nan
    np.save(tmp_path / "nan.npy", e)
    np.save(tmp_path / "l.npy", issame)
    np.save(tmp_path / "one.npy", np.ones(600, dtype=bool))
    np.save(tmp_path / "short.npy", issame[:-2])
    result = _run(*make(tmp_path), "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o" / "verification.json").exists()


def test_real_small_lfw_pack_is_refused_as_single_class(tmp_path):
    need(SMALL_LFW, SFACE)
    result = _run("--bin", SMALL_LFW, "--model", SFACE, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "single class" in result.output
    assert "all 10 pairs are genuine" in result.output


def _glint_rows():
    with (GLINT / "pairs_10fold.csv").open() as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:11] + rows[301:311]  # fold 0: 10 genuine, then 10 impostor pairs


def test_bin_pack_with_model_and_flip_then_saved_embeddings(tmp_path):
    need(GLINT / "pairs_10fold.csv", SFACE)
    _, chosen = _glint_rows()  # pack 20 real pairs as an insightface .bin of JPEG bytes
    blobs = [(GLINT / row[k]).read_bytes() for row in chosen for k in (1, 2)]
    issame = [row[3] == "1" for row in chosen]
    (tmp_path / "mixed.bin").write_bytes(pickle.dumps((blobs, issame), protocol=4))
    out = tmp_path / "o"
    result = _run("--bin", tmp_path / "mixed.bin", "--model", SFACE, "--flip", "--save-embeddings", "-o", out)
    assert result.exit_code == 0, result.output
    data = _json(out)
    assert data["n_pairs"] == 20
    assert data["fusion"] == "sum_raw"
    assert (data["meta"]["model_path"], data["meta"]["model_sha256"]) == (str(SFACE), file_sha256(SFACE))
    assert data["meta"]["preprocessing"].startswith("RGB, (x/255 − 0)/0.00392157, 112x112")
    assert data["auc"] > 0.9  # real faces: genuine pairs score above impostors
    saved = np.load(out / "embeddings.npz")
    assert saved["embeddings"].shape == (40, 128)
    assert saved["flip"].shape == (40, 128)
    again = _run("--embeddings", out / "embeddings.npz", "-o", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert _json(tmp_path / "again")["fold_accuracies"] == data["fold_accuracies"]


def test_pairs_csv_with_model(tmp_path):
    need(GLINT / "pairs_10fold.csv", SFACE)
    header, chosen = _glint_rows()
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *chosen])
    (tmp_path / "pairs.csv").write_text(buffer.getvalue())
    out = tmp_path / "o"
    result = _run("--pairs", tmp_path / "pairs.csv", "--root", GLINT, "--model", SFACE, "-o", out)
    assert result.exit_code == 0, result.output
    assert "fold column is not the contiguous" in result.output  # all rows say fold 0
    data = _json(out)
    assert data["n_pairs"] == 20
    assert data["n_genuine"] == 10
    assert data["fusion"] == "none"


# ---------------------------------------------------------------------------- pair lists of raw photos (ORL)

ORL = SHARED_DATA / "orl"


def _orl_list(tmp_path, extra=()):
    """12 pairs of ORL photos (92x112 grey, not aligned): genuine and impostor rows alternating, tab-separated,
    with the column names and Yes/No labels of a spreadsheet export."""
    rows = ["file_x\tfile_y\tDecision"]
    for k in range(6):
        rows.append(f"s{k + 1}/1.pgm\ts{k + 1}/2.pgm\tYes")
        rows.append(f"s{k + 1}/3.pgm\ts{(k + 1) % 6 + 1}/4.pgm\tNo")
    rows += list(extra)
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path / "pairs.tsv"


def test_pairs_of_raw_photos_are_detected_and_aligned(tmp_path):
    need(ORL / "s6" / "4.pgm", SFACE)
    from PIL import Image

    Image.new("L", (92, 112), 128).save(tmp_path / "blank.png")  # no face: its pair is left out, and named
    path = _orl_list(tmp_path, [f"{ORL}/s1/5.pgm\t{tmp_path}/blank.png\tno"])
    out = tmp_path / "o"
    result = _run("--pairs", path, "--root", ORL, "-m", SFACE, "--folds", "2", "--no-progress", "-o", out)
    assert result.exit_code == 0, result.output
    assert "detected" in result.output
    assert "1 of 13 pairs left out" in result.output
    assert "blank.png (no_face)" in result.output
    data = _json(out)
    assert (data["n_pairs"], data["n_genuine"], data["n_impostor"]) == (12, 6, 6)
    assert data["meta"]["faces"] == "detected and aligned"
    assert data["meta"]["pairs_dropped"] == 1
    assert [f["path"] for f in data["meta"]["images_without_face"]] == [str(tmp_path / "blank.png")]
    assert data["meta"]["detector"]["score_threshold"] > 0
    assert data["auc"] > 0.9  # ORL faces, aligned by the detector, are recognised


def test_aligned_flag_refuses_photos_that_are_not_crops(tmp_path):
    need(ORL / "s6" / "4.pgm", SFACE)
    path = _orl_list(tmp_path)
    result = _run("--pairs", path, "--root", ORL, "-m", SFACE, "--aligned", "--folds", "2", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "error: " in result.output
    assert "no pair has a face on both sides" in result.output
    assert "qualiface align" in result.output
    assert not (tmp_path / "o" / "verification.json").exists()


def test_columns_option_names_the_pair_columns(tmp_path):
    need(GLINT / "pairs_10fold.csv", SFACE)
    _, chosen = _glint_rows()
    words = {"1": "same", "0": "different"}
    lines = ["id;photo;other;verdict"] + [f"{i};{r[1]};{r[2]};{words[r[3]]}" for i, r in enumerate(chosen)]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    result = _run("--pairs", tmp_path / "p.csv", "--columns", "photo,other,verdict", "--root", GLINT, "-m", SFACE,
                  "--folds", "2", "--no-progress", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    data = _json(out)
    assert (data["n_genuine"], data["n_impostor"]) == (10, 10)
    assert data["meta"]["faces"] == "aligned crops as given"  # 112x112 glint crops: no detection
    plain = _run("--pairs", tmp_path / "p.csv", "--root", GLINT, "-m", SFACE, "-o", tmp_path / "o2")
    assert plain.exit_code == 2
    assert "no column for the first image" in plain.output
    assert "--columns" in plain.output


def test_a_previous_run_is_not_overwritten_without_overwrite(tmp_path):
    e, issame = t4_vectors()
    np.save(tmp_path / "e.npy", e)
    np.save(tmp_path / "l.npy", issame)
    args = ["--embeddings", tmp_path / "e.npy", "--labels", tmp_path / "l.npy", "-o", tmp_path / "o", "--no-plot"]
    assert _run(*args).exit_code == 0
    before = (tmp_path / "o" / "verification.json").read_text()
    again = _run(*args)
    assert again.exit_code == 2
    assert "holds a previous run" in again.output
    assert "--overwrite" in again.output
    assert (tmp_path / "o" / "verification.json").read_text() == before
    assert _run(*args, "--overwrite").exit_code == 0


def test_labels_file_takes_the_pair_list_label_words(tmp_path):
    e, issame = t4_vectors()
    np.save(tmp_path / "e.npy", e)
    words = ["Yes" if s else "no" for s in issame]
    (tmp_path / "l.csv").write_text("Decision\n" + "\n".join(words) + "\n")
    result = _run("--embeddings", tmp_path / "e.npy", "--labels", tmp_path / "l.csv", "--label-key", "Decision",
                  "-o", tmp_path / "o", "--no-plot")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _json(tmp_path / "o")["accuracy"] == evaluate_verification(e, issame).accuracy
