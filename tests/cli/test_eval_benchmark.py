"""``qualiface eval benchmark`` end to end on real photos (skipped with a reason when ``../shared/data`` is absent).

Glint360K: 80 pairs of aligned crops from ``pairs_10fold.csv`` (4 genuine and 4 impostor per fold), OpenCV Zoo's
SFace (no quality output) and a tiny random model exported to ONNX with a CR-FIQA quality output, side by side;
results.json is checked against :func:`evaluate_verification` and the EDC functions on embeddings computed here.
ORL (92x112 photos, detected): ``--folders`` on 4 identities x 3 photos builds the documented pair set, and the
pairs.csv it writes gives the same figures through ``--pairs``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _helpers.shared_data import GLINT, ORL, SFACE, need
from _helpers.tiny_backbone import TinyCNN
from qualiface.cli.app import app
from qualiface.data.pairs import load_pairs_csv
from qualiface.eval.benchmark_pairs import identity_folder_pairs
from qualiface.eval.edc import edc, edc_oracle, edc_random
from qualiface.eval.verification import evaluate_verification
from qualiface.models import FaceModel, load_model
from qualiface.models.export import export_onnx

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model with a CR-FIQA quality output, as an ONNX file (any qualiface install can load it)."""
    torch.manual_seed(0)
    backbone = TinyCNN(embedding_dim=16, input_size=16, quality_branch="cr_fiqa").eval()
    return export_onnx(FaceModel.from_backbone(backbone, name="tiny-crfiqa"), tmp_path_factory.mktemp("m") / "t.onnx")


@pytest.fixture(scope="module")
def glint_run(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path) -> tuple[Path, Path, dict]:
    need(GLINT / "pairs_10fold.csv", SFACE)
    rows = list(csv.DictReader((GLINT / "pairs_10fold.csv").open()))
    chosen = []
    for fold in range(10):
        in_fold = [r for r in rows if r["fold"] == str(fold)]
        chosen += [r for r in in_fold if r["same"] == "1"][:4] + [r for r in in_fold if r["same"] == "0"][:4]
    folder = tmp_path_factory.mktemp("glint")
    pairs = folder / "pairs.csv"
    with pairs.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["fold", "path1", "path2", "same"])
        writer.writeheader()
        writer.writerows(chosen)
    out = folder / "bench"
    args = ["eval", "benchmark", "--pairs", str(pairs), "--root", str(GLINT), "--aligned", "-m", str(SFACE)]
    result = runner.invoke(app, [*args, "-m", str(tiny_onnx), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return pairs, out, json.loads((out / "results.json").read_text())


def _read(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_benchmark_writes_both_reports_naming_both_models(glint_run) -> None:
    _, out, results = glint_run
    names = list(results["models"])
    assert len(names) == 2
    assert any("SFace" in n for n in names)
    assert "tiny-crfiqa" in names
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for name in names:
        assert name in markdown
        assert name in page
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (out / link).is_file()  # the Markdown links the PNGs beside it
    assert {"roc.png", "edc_tiny-crfiqa.png", "rejection_tar.png"} <= {p.name for p in out.glob("*.png")}
    sources = re.findall(r"<img src='([^']+)'", page)
    assert sources
    assert all(s.startswith("data:image/png;base64,") for s in sources)  # self-contained
    # 40 impostor pairs: every default FAR target is below 1/40, and the reports say so
    for text in ("n/m (needs ≥ 1,000 impostor pairs, has 40)", "n/m (needs ≥ 100 impostor pairs, has 40)"):
        assert text in markdown
        assert text in page
    measurable = results["models"]["tiny-crfiqa"]["verification"]["tar_at_far_measurable"]
    assert measurable == {"0.0001": False, "0.001": False, "0.01": False}


def test_benchmark_verification_equals_evaluate_verification(glint_run) -> None:
    pairs_csv, _, results = glint_run
    pairs = load_pairs_csv(pairs_csv, GLINT)
    sface = load_model(SFACE)
    expected = evaluate_verification(
        sface.embed(_read(pairs.paths_a)), pairs.issame, embeddings_b=sface.embed(_read(pairs.paths_b)),
        fars=(1e-4, 1e-3, 1e-2),
    )  # fmt: skip
    got = next(m for name, m in results["models"].items() if "SFace" in name)
    v = got["verification"]
    assert v["n_pairs"] == 80
    assert v["accuracy"] == pytest.approx(expected.accuracy)
    assert v["accuracy_std"] == pytest.approx(expected.accuracy_std)
    assert v["auc"] == pytest.approx(expected.auc)
    assert v["eer"] == pytest.approx(expected.eer)
    assert v["tar_at_far"] == pytest.approx(expected.tar_at_far)
    assert got["quality"] is None
    assert "no quality output" in got["note"]


def test_benchmark_quality_equals_the_edc_functions(glint_run, tiny_onnx) -> None:
    pairs_csv, _, results = glint_run
    pairs = load_pairs_csv(pairs_csv, GLINT)
    model = load_model(tiny_onnx)
    ea, qa = model.embed_and_quality(_read(pairs.paths_a))
    eb, qb = model.embed_and_quality(_read(pairs.paths_b))
    a, b = ea.astype(np.float64), eb.astype(np.float64)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    pair_q = np.minimum(qa, qb).astype(np.float64)
    curve = edc(cos, pairs.issame, pair_q, fmr=1e-3).curves["fmr=0.001"]
    random = edc_random(cos, pairs.issame, fmr=1e-3, progress=False).curves["fmr=0.001"]
    oracle = edc_oracle(cos, pairs.issame, fmr=1e-3).curves["fmr=0.001"]
    quality = results["models"]["tiny-crfiqa"]["quality"]
    assert quality["method"] == "cr_fiqa"
    for limit in ("0.2", "0.3"):
        assert quality["pauc"]["model"][limit] == pytest.approx(curve.pauc[float(limit)], abs=1e-9)
        assert quality["pauc"]["random"][limit] == pytest.approx(random.pauc[float(limit)], abs=1e-9)
        assert quality["pauc"]["oracle"][limit] == pytest.approx(oracle.pauc[float(limit)], abs=1e-9)
    assert quality["edc"]["curves"]["fmr=0.001"]["threshold"] == pytest.approx(curve.threshold)
    assert quality["achieved_fmr"] == pytest.approx(np.mean(cos[~pairs.issame] >= curve.threshold))
    assert quality["fmr_measurable"] is False


def test_benchmark_refuses_to_overwrite_a_previous_run(glint_run, tiny_onnx) -> None:
    pairs_csv, out, _ = glint_run
    args = ["eval", "benchmark", "--pairs", str(pairs_csv), "--root", str(GLINT), "--aligned", "-m", str(tiny_onnx)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2
    assert "already holds a benchmark" in result.stderr
    assert "--overwrite" in result.stderr


@pytest.fixture(scope="module")
def orl_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 ORL identities x 3 photos (92x112 greyscale, not aligned: detected), as identity folders."""
    need(ORL / "s1", ORL / "s4")
    root = tmp_path_factory.mktemp("orl")
    for person in range(1, 5):
        (root / f"s{person}").mkdir()
        for photo in (1, 2, 3):
            (root / f"s{person}" / f"{photo}.pgm").write_bytes((ORL / f"s{person}" / f"{photo}.pgm").read_bytes())
    return root


def test_folders_build_the_documented_pairs_and_pairs_csv_reproduces_them(orl_subset, tiny_onnx, tmp_path) -> None:
    out = tmp_path / "bench"
    base = ["eval", "benchmark", "-m", str(tiny_onnx), "--no-progress", "--folds", "5"]
    result = runner.invoke(app, [*base, "--folders", str(orl_subset), "--seed", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    data = results["dataset"]
    assert data["source"] == "identity folders"
    assert (data["identities"], data["images_in_folders"]) == (4, 12)
    # every genuine pair (4 x C(3,2) = 12) and as many impostors, of the 54 different-identity pairs
    assert (data["genuine_pairs"], data["impostor_pairs"]) == (12, 12)
    assert (data["genuine_available"], data["impostor_available"]) == (12, 54)
    expected = identity_folder_pairs(orl_subset, seed=7).pairs
    written = load_pairs_csv(out / "pairs.csv", orl_subset)
    assert [(p.name, q.name) for p, q in zip(written.paths_a, written.paths_b, strict=True)] == [
        (p.name, q.name) for p, q in zip(expected.paths_a, expected.paths_b, strict=True)
    ]
    np.testing.assert_array_equal(written.issame, expected.issame)
    assert data["pairs_evaluated"] + data["pairs_dropped"] == 24
    assert data["faces"] == "detected and aligned"
    # the written list, given back with --pairs, is the same benchmark
    again = tmp_path / "again"
    rerun = [*base, "--pairs", str(out / "pairs.csv"), "--root", str(orl_subset), "--out", str(again)]
    result = runner.invoke(app, rerun)
    assert result.exit_code == 0, result.output
    second = json.loads((again / "results.json").read_text())
    first_v = results["models"]["tiny-crfiqa"]["verification"]
    second_v = second["models"]["tiny-crfiqa"]["verification"]
    for key in ("n_pairs", "accuracy", "auc", "eer"):
        assert second_v[key] == pytest.approx(first_v[key])
    # --overwrite replaces a previous benchmark
    result = runner.invoke(app, [*rerun, "--overwrite", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["models"]) == {"tiny-crfiqa"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --pairs or --folders"),
        (["--pairs", "p.csv", "--folders", "f"], "exactly one of --pairs or --folders"),
        (["--folders", "f", "--root", "r"], "--root and --columns go with --pairs"),
        (["--pairs", "p.csv", "--seed", "3"], "--seed go with --folders"),
        (["--folders", "f", "--aligned", "--detector", "score=0.3"], "choose one"),
        (["--folders", "f", "--preprocessing", "raw", "--preprocessing", "raw"], "once per --model"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["eval", "benchmark", "-m", "model.onnx", *extra, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file.md").write_text("x")
    args = ["eval", "benchmark", "-m", "m.onnx", "--folders", str(tmp_path), "--out", str(tmp_path / "file.md")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--out is a folder" in result.stderr


def test_help() -> None:
    result = runner.invoke(app, ["eval", "benchmark", "--help"])
    assert result.exit_code == 0
    for option in ("--pairs", "--folders", "--model", "--aligned", "--detector", "--fmr", "--folds", "--out"):
        assert option in result.output


def test_columns_name_the_pair_list_columns(glint_run, tiny_onnx, tmp_path) -> None:
    pairs_csv, _, _ = glint_run
    rows = list(csv.DictReader(pairs_csv.open()))
    renamed = tmp_path / "mine.csv"
    with renamed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x_img", "y_img", "verdict"])
        writer.writerows([r["path1"], r["path2"], "yes" if r["same"] == "1" else "no"] for r in rows)
    args = ["eval", "benchmark", "--pairs", str(renamed), "--root", str(GLINT), "--aligned", "-m", str(tiny_onnx)]
    result = runner.invoke(app, [*args, "--columns", "x_img,y_img,verdict", "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["dataset"]["genuine"] == sum(r["same"] == "1" for r in rows)
    assert results["dataset"]["pairs_evaluated"] == len(rows)
    assert json.loads(result.stdout)["models"]["tiny-crfiqa"]["auc"] == pytest.approx(
        results["models"]["tiny-crfiqa"]["verification"]["auc"]
    )
