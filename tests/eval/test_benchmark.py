"""The benchmark library: pairs from identity folders, the fixed-threshold rejection curve, and run_benchmark's
figures against the evaluation functions called directly on independently computed embeddings.

Folder trees are written in ``tmp_path`` (empty files: building pairs reads no pixels). The run_benchmark tests
use aligned Glint360K crops (``../shared/data``; skipped with a reason when absent) and two tiny random models
(``tiny_cnn``, 16x16 input: fast), one with a CR-FIQA quality branch and one without.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers.shared_data import GLINT, need
from _helpers.tiny_backbone import TinyCNN
from qualiface.data.pairs import PairList, load_pairs_csv
from qualiface.errors import InputError
from qualiface.eval.benchmark import fixed_threshold_rejection, run_benchmark
from qualiface.eval.benchmark_pairs import identity_folder_pairs
from qualiface.eval.edc import edc, edc_oracle, edc_random
from qualiface.eval.uncertainty import accuracy_rejection_curve, rejection_curve
from qualiface.eval.verification import contiguous_folds, evaluate_verification
from qualiface.models import FaceModel


def _tree(root: Path, sizes: dict[str, int], loose: int = 0) -> Path:
    for name, n in sizes.items():
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(n):
            (folder / f"{k:04d}.jpg").touch()
    for k in range(loose):
        (root / f"loose{k}.png").touch()
    return root


def _pair_set(pairs: PairList) -> set[tuple[str, str]]:
    return {tuple(sorted((str(a), str(b)))) for a, b in zip(pairs.paths_a, pairs.paths_b, strict=True)}


def test_folder_pairs_small_set_takes_every_genuine_pair_and_as_many_impostors(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ids", {"ann": 4, "bob": 3, "cyd": 1}, loose=2)
    built = identity_folder_pairs(root, seed=3)
    files = {name: sorted((root / name).iterdir()) for name in ("ann", "bob", "cyd")}
    genuine = {tuple(sorted((str(a), str(b)))) for f in files.values() for a, b in itertools.combinations(f, 2)}
    everything = [p for f in files.values() for p in f]
    impostor = {
        tuple(sorted((str(a), str(b)))) for a, b in itertools.combinations(everything, 2) if a.parent != b.parent
    }
    pairs = built.pairs
    got = _pair_set(pairs)
    assert len(got) == len(pairs)  # no pair twice
    same = np.array([a.parent == b.parent for a, b in zip(pairs.paths_a, pairs.paths_b, strict=True)])
    np.testing.assert_array_equal(same, pairs.issame)
    assert {p for p, s in zip(_pair_set_list(pairs), pairs.issame, strict=True) if s} == genuine  # all 6 + 3
    assert {p for p, s in zip(_pair_set_list(pairs), pairs.issame, strict=True) if not s} <= impostor
    assert int((~pairs.issame).sum()) == len(genuine) == 9
    d = built.describe()
    assert (d["identities"], d["images_in_folders"], d["loose_files_ignored"]) == (3, 8, 2)
    assert (d["genuine_available"], d["impostor_available"]) == (9, len(impostor))


def _pair_set_list(pairs: PairList) -> list[tuple[str, str]]:
    return [tuple(sorted((str(a), str(b)))) for a, b in zip(pairs.paths_a, pairs.paths_b, strict=True)]


def test_folder_pairs_are_seeded_and_every_fold_holds_both_classes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ids", {f"id{k}": 5 for k in range(6)})
    a = identity_folder_pairs(root, seed=0).pairs
    b = identity_folder_pairs(root, seed=0).pairs
    c = identity_folder_pairs(root, seed=1).pairs
    assert _pair_set_list(a) == _pair_set_list(b)
    assert _pair_set_list(a) != _pair_set_list(c)
    folds = contiguous_folds(len(a), 10)
    per_fold = [int(a.issame[folds == k].sum()) for k in range(10)]
    sizes = [int((folds == k).sum()) for k in range(10)]
    for genuine, size in zip(per_fold, sizes, strict=True):
        assert abs(genuine - size / 2) <= 1  # 60 genuine + 60 impostor, spread evenly


def test_folder_pairs_sample_large_sets_uniformly_within_the_bound(tmp_path: Path) -> None:
    sizes = {"small": 10, "mid": 50, "big": 200}
    root = _tree(tmp_path / "ids", sizes)
    built = identity_folder_pairs(root, max_pairs=2000, seed=0)
    pairs = built.pairs
    assert len(pairs) == 2000
    assert int(pairs.issame.sum()) == 1000
    assert len(_pair_set(pairs)) == 2000
    assert all(a != b for a, b in zip(pairs.paths_a, pairs.paths_b, strict=True))
    same = np.array([a.parent == b.parent for a, b in zip(pairs.paths_a, pairs.paths_b, strict=True)])
    np.testing.assert_array_equal(same, pairs.issame)
    # uniform over pairs: identity (block) shares follow the number of pairs in each, not the number of identities
    g_total = sum(n * (n - 1) // 2 for n in sizes.values())
    genuine_big = np.mean([a.parent.name == "big" for a, s in zip(pairs.paths_a, pairs.issame, strict=True) if s])
    assert abs(genuine_big - 200 * 199 / 2 / g_total) < 0.03
    blocks = [
        frozenset((a.parent.name, b.parent.name))
        for a, b, s in zip(pairs.paths_a, pairs.paths_b, pairs.issame, strict=True)
        if not s
    ]
    i_total = 10 * 50 + 10 * 200 + 50 * 200
    assert abs(blocks.count(frozenset(("mid", "big"))) / 1000 - 50 * 200 / i_total) < 0.04
    assert abs(blocks.count(frozenset(("small", "mid"))) / 1000 - 10 * 50 / i_total) < 0.02


def test_folder_pairs_ratio_takes_every_impostor_that_fits(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ids", {"a": 3, "b": 3, "c": 3})
    pairs = identity_folder_pairs(root, impostor_ratio=100).pairs
    assert int(pairs.issame.sum()) == 9
    assert int((~pairs.issame).sum()) == 27  # all 3*3*3 different-identity pairs


@pytest.mark.parametrize(
    ("sizes", "message"),
    [({"only": 3}, "at least two"), ({"a": 1, "b": 1}, "no identity folder has two images")],
)
def test_folder_pairs_refuse_sets_without_both_classes(tmp_path: Path, sizes: dict[str, int], message: str) -> None:
    root = _tree(tmp_path / "ids", sizes)
    with pytest.raises(InputError, match=message):
        identity_folder_pairs(root)


def test_folder_pairs_refuse_a_file_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "f.txt").touch()
    with pytest.raises(InputError, match="not a folder"):
        identity_folder_pairs(tmp_path / "f.txt")
    root = _tree(tmp_path / "ids", {"a": 2, "b": 2})
    with pytest.raises(InputError, match="impostor-ratio"):
        identity_folder_pairs(root, impostor_ratio=0)


def test_folder_pairs_csv_reads_back_as_the_same_pairs(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ids", {f"p{k}": 4 for k in range(5)})
    built = identity_folder_pairs(root, seed=2)
    built.write_csv(tmp_path / "pairs.csv", 10)
    again = load_pairs_csv(tmp_path / "pairs.csv", root)
    assert _pair_set_list(again) == _pair_set_list(built.pairs)
    np.testing.assert_array_equal(again.issame, built.pairs.issame)
    np.testing.assert_array_equal(again.folds, contiguous_folds(len(again), 10))


def test_fixed_threshold_rejection_matches_a_loop() -> None:
    rng = np.random.default_rng(0)
    n = 301
    labels = rng.random(n) < 0.4
    scores = np.where(labels, rng.normal(0.5, 0.2, n), rng.normal(0.1, 0.2, n))
    quality = np.round(rng.random(n), 2)  # ties
    portions = np.array([0.0, 0.1, 0.333, 0.5, 0.9])
    got = fixed_threshold_rejection(scores, labels, quality, 0.3, portions)
    order = sorted(range(n), key=lambda i: (-quality[i], i))  # highest quality first, ties in input order
    for k, p in enumerate(portions):
        kept = order[: int(n * (1 - p))]
        gen = [i for i in kept if labels[i]]
        imp = [i for i in kept if not labels[i]]
        assert got.fnmr[k] == pytest.approx(sum(scores[i] < 0.3 for i in gen) / len(gen))
        assert got.fmr[k] == pytest.approx(sum(scores[i] >= 0.3 for i in imp) / len(imp))


def test_fixed_threshold_rejection_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="pair_quality"):
        fixed_threshold_rejection([0.1, 0.2], [0, 1], [1.0], 0.0)
    with pytest.raises(ValueError, match="scores"):
        fixed_threshold_rejection([0.1, np.nan], [0, 1], [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="portions"):
        fixed_threshold_rejection([0.1, 0.2], [0, 1], [1.0, 2.0], 0.0, portions=[0.5, 0.1])


# ------------------------------------------------------------------ run_benchmark on aligned Glint360K crops


@pytest.fixture(scope="module")
def glint_pairs(tmp_path_factory: pytest.TempPathFactory) -> PairList:
    """8 genuine and 8 impostor pairs of each fold of the Glint360K sample's list (160 pairs), plus one pair whose
    image is not a 112x112 crop (it gives no face with aligned=True)."""
    need(GLINT / "pairs_10fold.csv")
    rows = list(csv.DictReader((GLINT / "pairs_10fold.csv").open()))
    chosen = []
    for fold in range(10):
        in_fold = [r for r in rows if r["fold"] == str(fold)]
        chosen += [r for r in in_fold if r["same"] == "1"][:8] + [r for r in in_fold if r["same"] == "0"][:8]
    folder = tmp_path_factory.mktemp("glint")
    Image.new("RGB", (90, 100), (128, 128, 128)).save(folder / "not_a_crop.png")
    chosen.append({"fold": "9", "path1": str(folder / "not_a_crop.png"), "path2": chosen[0]["path1"], "same": "1"})
    with (folder / "pairs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["fold", "path1", "path2", "same"])
        writer.writeheader()
        writer.writerows(chosen)
    return load_pairs_csv(folder / "pairs.csv", GLINT)


@pytest.fixture(scope="module")
def tiny_models() -> list[FaceModel]:
    torch.manual_seed(0)
    with_quality = TinyCNN(embedding_dim=16, input_size=16, quality_branch="cr_fiqa").eval()
    torch.manual_seed(1)
    plain = TinyCNN(embedding_dim=16, input_size=16).eval()
    return [FaceModel.from_backbone(with_quality, name="tiny"), FaceModel.from_backbone(plain, name="tiny")]


@pytest.fixture(scope="module")
def benchmark(glint_pairs: PairList, tiny_models: list[FaceModel]):
    return run_benchmark(glint_pairs, tiny_models, aligned=True)


def _independent(model: FaceModel, pairs: PairList) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Embeddings of both sides of the 160 real pairs (the last pair has no face), read with Pillow here."""
    a = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pairs.paths_a[:-1]])
    b = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pairs.paths_b[:-1]])
    if model.quality_method is None:
        return model.embed(a), model.embed(b), None
    (ea, qa), (eb, qb) = model.embed_and_quality(a), model.embed_and_quality(b)
    return ea, eb, np.stack([qa, qb])


def test_benchmark_leaves_out_the_pair_without_a_face_and_names_the_file(benchmark, glint_pairs) -> None:
    assert benchmark.dataset["pairs_listed"] == 161
    assert benchmark.dataset["pairs_evaluated"] == 160
    assert benchmark.dataset["pairs_dropped"] == 1
    assert [Path(f["path"]).name for f in benchmark.images_without_face] == ["not_a_crop.png"]
    assert list(benchmark.models) == ["tiny", "tiny #2"]


def test_benchmark_verification_equals_evaluate_verification(benchmark, glint_pairs, tiny_models) -> None:
    for model, name in zip(tiny_models, ["tiny", "tiny #2"], strict=True):
        ea, eb, _ = _independent(model, glint_pairs)
        expected = evaluate_verification(ea, glint_pairs.issame[:-1], embeddings_b=eb, fars=(1e-4, 1e-3, 1e-2))
        got = benchmark.models[name].verification
        assert got.accuracy == pytest.approx(expected.accuracy)
        assert got.accuracy_std == pytest.approx(expected.accuracy_std)
        assert got.auc == pytest.approx(expected.auc)
        assert got.eer == pytest.approx(expected.eer)
        assert got.tar_at_far == pytest.approx(expected.tar_at_far)
        # 80 impostor pairs: no target below 1/80 = 0.0125 is measurable
        assert benchmark.models[name].tar_measurable == {"0.0001": False, "0.001": False, "0.01": False}


def test_benchmark_quality_equals_the_edc_functions(benchmark, glint_pairs, tiny_models) -> None:
    ea, eb, q = _independent(tiny_models[0], glint_pairs)
    assert q is not None
    labels = glint_pairs.issame[:-1]
    na = ea.astype(np.float64) / np.linalg.norm(ea.astype(np.float64), axis=1, keepdims=True)
    nb = eb.astype(np.float64) / np.linalg.norm(eb.astype(np.float64), axis=1, keepdims=True)
    cos = np.sum(na * nb, axis=1)
    pair_q = np.minimum(q[0], q[1]).astype(np.float64)
    expected = edc(cos, labels, pair_q, fmr=1e-3).curves["fmr=0.001"]
    random = edc_random(cos, labels, fmr=1e-3, progress=False).curves["fmr=0.001"]
    oracle = edc_oracle(cos, labels, fmr=1e-3).curves["fmr=0.001"]
    got = benchmark.models["tiny"].quality
    assert got is not None
    assert got.method == "cr_fiqa"
    pauc = got.pauc()
    for limit in (0.2, 0.3):
        assert pauc["model"][limit] == pytest.approx(expected.pauc[limit], abs=1e-9)
        assert pauc["random"][limit] == pytest.approx(random.pauc[limit], abs=1e-9)
        assert pauc["oracle"][limit] == pytest.approx(oracle.pauc[limit], abs=1e-9)
    assert got.fmr_measurable is False  # 1e-3 < 1/80
    assert got.achieved_fmr == pytest.approx(np.mean(cos[~labels] >= expected.threshold))
    # rejection curves: the uncertainty module's, on the same scores, qualities and thresholds
    tar = rejection_curve(cos, labels, pair_q, fars=(1e-3,))
    np.testing.assert_allclose(got.tar_rejection.tar[1e-3], tar.tar[1e-3])
    threshold = 1 - np.mean(benchmark.models["tiny"].verification.fold_thresholds) / 2
    acc = accuracy_rejection_curve(cos, labels, pair_q, threshold=threshold)
    np.testing.assert_allclose(got.accuracy_rejection.accuracy, acc.accuracy)


def test_benchmark_model_without_quality_gets_recognition_and_a_note(benchmark) -> None:
    plain = benchmark.models["tiny #2"]
    assert plain.quality is None
    assert "no quality output" in plain.note
    assert plain.to_dict()["quality"] is None
    assert "quality" in plain.summary()


def test_benchmark_norm_quality_scores_the_embedding_norm(glint_pairs, tiny_models) -> None:
    result = run_benchmark(glint_pairs, tiny_models[1:], aligned=True, norm_quality=True, fars=(0.0125, 0.1))
    assert result.models["tiny"].tar_measurable == {"0.0125": True, "0.1": True}
    quality = result.models["tiny"].quality
    assert quality is not None
    assert (quality.method, quality.source) == ("feature_norm", "embedding_norm")
    assert "heuristic" in result.models["tiny"].note


def test_benchmark_refuses_bad_input(glint_pairs, tiny_models) -> None:
    with pytest.raises(InputError, match="no model"):
        run_benchmark(glint_pairs, [], aligned=True)
    with pytest.raises(InputError, match="--fmr"):
        run_benchmark(glint_pairs, tiny_models, aligned=True, fmr=0)
    genuine_only = PairList(glint_pairs.paths_a[:8], glint_pairs.paths_b[:8], np.ones(8, bool), None, "g.csv")
    with pytest.raises(InputError, match="all 8 pairs are genuine"):
        run_benchmark(genuine_only, tiny_models, aligned=True)


def test_benchmark_in_small_chunks_gives_the_same_figures(benchmark, glint_pairs, tiny_models) -> None:
    calls = []
    chunked = run_benchmark(
        glint_pairs, tiny_models, aligned=True, chunk_size=7, progress=lambda *args: calls.append(args)
    )
    n_files = len(set(glint_pairs.paths_a) | set(glint_pairs.paths_b))
    assert calls[-1] == ("images", n_files, n_files)
    assert len(calls) == -(-n_files // 7)  # one call per chunk of 7
    for name in ("tiny", "tiny #2"):
        got, expected = chunked.models[name], benchmark.models[name]
        assert got.verification.accuracy == expected.verification.accuracy
        np.testing.assert_array_equal(got.verification.all_pairs_tpr, expected.verification.all_pairs_tpr)
    assert chunked.models["tiny"].quality.pauc() == benchmark.models["tiny"].quality.pauc()
    assert chunked.images_without_face == benchmark.images_without_face


def test_write_benchmark_writes_every_file_and_refuses_to_overwrite(glint_pairs, tiny_models, tmp_path) -> None:
    from qualiface.eval.benchmark_report import write_benchmark

    result = run_benchmark(glint_pairs, [tiny_models[0], tiny_models[0]], names=["a b", "a_b"], aligned=True)
    written = write_benchmark(result, tmp_path / "out")
    names = {p.name for p in written}
    assert {"report.md", "report.html", "results.json", "roc.png", "edc_a_b.png", "edc_a_b_2.png"} <= names
    assert written[-1].name == "results.json"  # the mark of a finished run comes last
    assert all(p.is_file() for p in written)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(json.dumps(result.to_dict()))
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| metric | a b | a_b |" in markdown  # one column per model
    with pytest.raises(InputError, match="already holds a benchmark"):
        write_benchmark(result, tmp_path / "out")
    assert write_benchmark(result, tmp_path / "out", overwrite=True)[-1].is_file()
