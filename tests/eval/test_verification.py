"""10-fold verification, VAL@FAR, all-pairs metrics and flip fusion against loop references, sklearn and T4.

T4: 600 synthetic pairs of 3-D unit embeddings (``t4_vectors``; pair i mated iff floor(i/30) mod 2 == 0, so each
fold of 60 holds 30 + 30) whose fold accuracies, thresholds, mean and std come from the official
``deepinsight/insightface: recognition/arcface_torch/eval/verification.py``.
"""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from _helpers.reference_verification import calculate_roc, calculate_val, t4_vectors
from qualiface.eval.fusion import FLIP_FUSION_MODES, fuse_flip, l2_normalize
from qualiface.eval.verification import (
    VerificationResult,
    accuracy_thresholds,
    contiguous_folds,
    evaluate_distances,
    evaluate_verification,
    kfold_accuracy,
    val_at_far,
    val_thresholds,
)


def _random_pairs(seed, n_pairs, *, on_grid=False):
    """Squared-L2-like distances in [0, 4) with a class shift; ``on_grid`` puts many exactly on grid values."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    d = np.where(issame, rng.normal(0.9, 0.3, n_pairs), rng.normal(1.5, 0.3, n_pairs)).clip(0.0, 3.999)
    if on_grid:
        grid = accuracy_thresholds()
        pick = rng.random(n_pairs) < 0.5
        d[pick] = grid[np.rint(d[pick] * 100).astype(int).clip(0, 399)]
    return d, issame


# ---------------------------------------------------------------------------- T4


def test_t4_fold_accuracies_thresholds_mean_and_std():
    e, issame = t4_vectors()
    result = evaluate_verification(e, issame)
    # each fold holds 60 pairs, so the accuracies are k/60: 0.9, 0.9, 0.85, 0.933333, 0.9, 0.9, 0.933333, 0.9,
    # 0.916667, 0.916667
    np.testing.assert_array_equal(result.fold_accuracies, np.array([54, 54, 51, 56, 54, 54, 56, 54, 55, 55]) / 60)
    np.testing.assert_allclose(
        result.fold_accuracies,
        [0.9, 0.9, 0.85, 0.933333, 0.9, 0.9, 0.933333, 0.9, 0.916667, 0.916667],
        atol=5e-7,
    )
    assert result.accuracy == pytest.approx(0.905, abs=5e-7)
    assert result.accuracy_std == pytest.approx(0.022423, abs=5e-7)
    grid = np.arange(0, 4, 0.01)
    expected = np.full(10, grid[76])
    expected[7] = grid[75]  # the 8th fold
    np.testing.assert_array_equal(result.fold_thresholds, expected)
    assert result.n_pairs == 600
    assert result.n_genuine == 300
    assert result.score_type == "squared_l2"


def test_t4_matches_the_reference_loop_bit_for_bit():
    e, issame = t4_vectors()
    d = np.sum(np.square(e[0::2] - e[1::2]), 1)
    tpr, fpr, acc, best = calculate_roc(np.arange(0, 4, 0.01), d, issame)
    ours = kfold_accuracy(d, issame)
    np.testing.assert_array_equal(ours.fold_accuracies, acc)
    np.testing.assert_array_equal(ours.fold_thresholds, best)
    np.testing.assert_array_equal(ours.tpr, tpr)
    np.testing.assert_array_equal(ours.fpr, fpr)


# ---------------------------------------------------------------------------- sweep vs the reference loop


@pytest.mark.parametrize(
    ("seed", "n_pairs", "n_folds", "on_grid"),
    [(0, 600, 10, False), (1, 613, 10, True), (2, 97, 10, True), (3, 250, 5, False), (4, 80, 1, True)],
)
def test_kfold_sweep_is_bit_identical_to_calculate_roc(seed, n_pairs, n_folds, on_grid):
    d, issame = _random_pairs(seed, n_pairs, on_grid=on_grid)
    tpr, fpr, acc, best = calculate_roc(np.arange(0, 4, 0.01), d, issame, nrof_folds=n_folds)
    ours = kfold_accuracy(d, issame, n_folds=n_folds)
    np.testing.assert_array_equal(ours.fold_accuracies, acc)
    np.testing.assert_array_equal(ours.fold_thresholds, best)
    np.testing.assert_array_equal(ours.tpr, tpr)
    np.testing.assert_array_equal(ours.fpr, fpr)
    assert ours.mean == np.mean(acc)
    assert ours.std == np.std(acc)


def test_strict_less_than_at_a_grid_value():
    # all genuine pairs sit exactly on the grid value 0.5: "d < 0.5" rejects them, "d < 0.51" accepts them
    grid = accuracy_thresholds()
    d = np.concatenate([np.full(50, grid[50]), np.full(50, 2.0)])
    issame = np.arange(100) < 50
    result = kfold_accuracy(d, issame)
    np.testing.assert_array_equal(result.fold_thresholds, np.full(10, grid[51]))  # first maximiser
    np.testing.assert_array_equal(result.fold_accuracies, np.ones(10))


def test_contiguous_folds_are_sklearn_kfold():
    from sklearn.model_selection import KFold

    for n_pairs in (600, 613, 10, 29):
        folds = contiguous_folds(n_pairs, 10)
        for k, (_, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.arange(n_pairs))):
            np.testing.assert_array_equal(np.flatnonzero(folds == k), test)


def test_fold_sizes_when_pairs_do_not_divide():
    d, issame = _random_pairs(5, 603)
    np.testing.assert_array_equal(kfold_accuracy(d, issame).fold_sizes, [61, 61, 61] + [60] * 7)


# ---------------------------------------------------------------------------- VAL@FAR


def test_val_matches_the_reference_loop():
    d, issame = _random_pairs(11, 1203)
    [(val_ref, std_ref, far_ref, per_fold, taus)] = calculate_val(np.arange(0, 4, 0.001), d, issame, 1e-3)
    ours = val_at_far(d, issame)
    np.testing.assert_allclose(ours.fold_thresholds, taus, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(ours.fold_val, per_fold)
    assert ours.val == val_ref
    assert ours.val_std == std_ref
    assert ours.far == far_ref


def test_val_interpolates_on_unmerged_far_plateaus():
    # Impostor distances on a coarse lattice make long FAR plateaus; genuine distances are dense where the
    # interpolated threshold falls, so the three interpolation variants give different VAL (docs/protocols.md,
    # '1:1 verification (10-fold)', VAL@FAR).
    rng = np.random.default_rng(7)
    n_pairs = 3000
    issame = np.arange(n_pairs) % 5 == 0
    d = np.where(issame, rng.uniform(0.2, 1.2, n_pairs), np.round(rng.uniform(0.6, 3.0, n_pairs), 2))
    grid = val_thresholds()
    ours = val_at_far(d, issame)
    ref, ref_max, ref_min = calculate_val(grid, d, issame, 1e-3, merges=(None, "max", "min"))
    assert ours.val == ref[0]
    np.testing.assert_allclose(ours.fold_thresholds, ref[4], rtol=1e-13, atol=0)
    assert ours.val != ref_max[0]
    assert ours.val != ref_min[0]
    assert not np.allclose(ours.fold_thresholds, ref_max[4])
    assert not np.allclose(ours.fold_thresholds, ref_min[4])
    # np.interp on the unmerged arrays: from the last threshold of the plateau <= target to the first of the next
    fold0_train = np.arange(n_pairs) >= 300
    far = np.array([np.mean(d[fold0_train & ~issame] < t) for t in grid])
    j = np.flatnonzero(far <= 1e-3).max()
    assert far[j + 1] > far[j]
    assert grid[j] <= ours.fold_thresholds[0] <= grid[j + 1]


def test_val_is_zero_threshold_when_far_target_is_unreachable():
    # impostors all far away: the training FAR never reaches the target, the reference uses threshold 0
    issame = np.arange(200) % 2 == 0
    d = np.where(issame, 0.5, 10.0)
    ours = val_at_far(d, issame)
    np.testing.assert_array_equal(ours.fold_thresholds, np.zeros(10))
    np.testing.assert_array_equal(ours.fold_val, np.zeros(10))


def test_val_is_nan_for_a_fold_without_impostors():
    issame = np.ones(100, dtype=bool)
    issame[50:] = False  # folds 0-4 all genuine, 5-9 all impostor
    d = np.where(issame, 0.5, 1.5)
    ours = val_at_far(d, issame)
    assert np.isnan(ours.fold_val[5:]).all()
    assert np.isnan(ours.fold_far[:5]).all()
    assert np.isnan(ours.val)


# ---------------------------------------------------------------------------- all pairs and the result object


def test_all_pairs_metrics_against_sklearn_and_a_loop():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(2000, 16))
    issame = rng.random(1000) < 0.4
    e[1::2][issame] = e[0::2][issame] + rng.normal(scale=0.9, size=(int(issame.sum()), 16))
    result = evaluate_verification(e, issame)
    a, b = e[0::2], e[1::2]
    cos = np.array([a[i] @ b[i] / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) for i in range(1000)])
    assert result.auc == pytest.approx(roc_auc_score(issame, cos), abs=1e-12)
    fpr, tpr, _ = roc_curve(issame, cos)
    for far in (1e-3, 1e-2, 1e-1):  # insightface nearest rule on the reversed sklearn curve
        expected = tpr[::-1][np.argmin(np.abs(fpr[::-1] - far))]
        assert result.tar_at_far[f"{far:g}"] == pytest.approx(expected, abs=0)
    # EER from the definition: the crossing of FNR and FPR on the full ROC
    fpr_f, tpr_f, _ = roc_curve(issame, cos, drop_intermediate=False)
    fnr = 1 - tpr_f
    i = int(np.argmax(fnr <= fpr_f))
    t = (fnr[i - 1] - fpr_f[i - 1]) / ((fnr[i - 1] - fpr_f[i - 1]) - (fnr[i] - fpr_f[i]))
    assert result.eer == pytest.approx(fpr_f[i - 1] + t * (fpr_f[i] - fpr_f[i - 1]), abs=1e-12)
    assert set(result.tar_at_far) == {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"}
    assert result.all_pairs_score_type == "cosine"


def test_interleaved_and_split_embeddings_agree():
    rng = np.random.default_rng(4)
    e = rng.normal(size=(400, 8))
    issame = rng.random(200) < 0.5
    one = evaluate_verification(e, issame)
    two = evaluate_verification(e[0::2], issame, embeddings_b=e[1::2])
    assert one.to_dict() == two.to_dict()


def test_distances_entry_point_uses_negative_distance_scores():
    d, issame = _random_pairs(8, 500)
    result = evaluate_distances(d, issame)
    assert result.all_pairs_score_type == "negative_squared_l2"
    assert result.auc == pytest.approx(roc_auc_score(issame, -d), abs=1e-12)


def test_result_exports_json_and_one_csv_row_per_fold(tmp_path):
    e, issame = t4_vectors()
    result = evaluate_verification(e, issame)
    assert isinstance(result, VerificationResult)
    data = json.loads(result.to_json(tmp_path / "r.json").read_text())
    assert data["accuracy"] == result.accuracy
    assert data["fold_thresholds"][7] == result.fold_thresholds[7]
    assert len(data["roc_tpr"]) == 400
    rows = result.rows()
    assert [row["fold"] for row in rows] == list(range(10))
    assert rows[2]["accuracy"] == 51 / 60
    lines = result.to_csv(tmp_path / "r.csv").read_text().strip().splitlines()
    assert lines[0].startswith("fold,n_pairs,accuracy,threshold")
    assert len(lines) == 11
    assert "0.90500+-0.02242" in result.summary()


# ---------------------------------------------------------------------------- bad input


def test_nan_embedding_is_rejected_with_its_row():
    e, issame = t4_vectors()
    e[13, 1] = np.nan
    with pytest.raises(ValueError, match=r"embeddings: 1 row\(s\) hold NaN or inf, first row 13"):
        evaluate_verification(e, issame)


@pytest.mark.parametrize("value", [True, False])
def test_single_class_is_rejected(value):
    e, _ = t4_vectors()
    with pytest.raises(ValueError, match="single class"):
        evaluate_verification(e, np.full(600, value))


def test_length_mismatches_are_rejected():
    e, issame = t4_vectors()
    with pytest.raises(ValueError, match="600 embedding pairs but issame has shape"):
        evaluate_verification(e, issame[:-1])
    with pytest.raises(ValueError, match="even number of rows"):
        evaluate_verification(e[:-1], issame)
    with pytest.raises(ValueError, match="embeddings_b"):
        evaluate_verification(e[0::2], issame, embeddings_b=e[1::2][:-1])
    with pytest.raises(ValueError, match="different lengths"):
        kfold_accuracy(np.ones(10), np.arange(11) % 2)


def test_labels_other_than_zero_one_and_too_few_pairs_are_rejected():
    with pytest.raises(ValueError, match="0 or 1"):
        kfold_accuracy(np.ones(20), np.arange(20) % 3)
    with pytest.raises(ValueError, match="cannot be split into 10 folds"):
        kfold_accuracy(np.ones(6), np.arange(6) % 2)


# ---------------------------------------------------------------------------- flip fusion


def _raw(seed, n=6, dim=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) * rng.uniform(1, 30, size=(n, 1)), rng.normal(size=(n, dim)) * 7


def test_fusion_modes_follow_their_formulas():
    e, f = _raw(0)
    np.testing.assert_array_equal(fuse_flip(e, f, "none"), e)
    np.testing.assert_array_equal(fuse_flip(e, f, "sum_raw"), e + f)
    concat = fuse_flip(e, f, "concat_normalised")
    for i in range(len(e)):
        expected = np.concatenate([e[i] / np.sqrt(np.sum(e[i] ** 2)), f[i] / np.sqrt(np.sum(f[i] ** 2))])
        np.testing.assert_allclose(concat[i], expected, rtol=1e-14, atol=1e-15)
        # AdaFace norm_weighted_avg: w_k = n_k / sum(n), fused = normalize(sum w_k e_k / n_k), norm = mean(n_k)
        n_e, n_f = np.sqrt(np.sum(e[i] ** 2)), np.sqrt(np.sum(f[i] ** 2))
        direction = n_e / (n_e + n_f) * (e[i] / n_e) + n_f / (n_e + n_f) * (f[i] / n_f)
        direction /= np.sqrt(np.sum(direction**2))
        np.testing.assert_allclose(
            fuse_flip(e, f, "norm_weighted_avg")[i], direction * (n_e + n_f) / 2, rtol=1e-13, atol=1e-14
        )


def test_sum_raw_equals_adaface_pre_norm_vector_add():
    e, f = _raw(1)
    stacked = torch.from_numpy(np.stack([e, f]))
    norms = torch.linalg.vector_norm(stacked, dim=2, keepdim=True)
    fused = torch.nn.functional.normalize((stacked / norms * norms).sum(0), dim=1)  # normalize(sum n_k ê_k)
    np.testing.assert_allclose(l2_normalize(fuse_flip(e, f, "sum_raw")), fused.numpy(), rtol=1e-13, atol=1e-15)
    # the norm-weighted average points the same way; only its norm differs
    nwa = fuse_flip(e, f, "norm_weighted_avg")
    np.testing.assert_allclose(l2_normalize(nwa), fused.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(nwa, axis=1), norms.squeeze(2).mean(0).numpy(), rtol=1e-13)


def test_flip_fusion_in_evaluation_is_arcface_torch_test():
    rng = np.random.default_rng(5)
    e, f = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    issame = rng.random(200) < 0.5
    ours = evaluate_verification(e, issame, flip=f)  # default sum_raw
    fused = e + f
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)  # arcface_torch: normalize(f(x) + f(flip x))
    d = np.sum(np.square(fused[0::2] - fused[1::2]), 1)
    _, _, acc, best = calculate_roc(np.arange(0, 4, 0.01), d, issame)
    np.testing.assert_array_equal(ours.fold_accuracies, acc)
    np.testing.assert_array_equal(ours.fold_thresholds, best)
    assert ours.fusion == "sum_raw"
    concat = evaluate_verification(e, issame, flip=f, fusion="concat_normalised")
    assert concat.fusion == "concat_normalised"
    assert concat.auc != ours.auc


def test_fusion_errors():
    e, f = _raw(2)
    with pytest.raises(ValueError, match="unknown"):
        fuse_flip(e, f, "mean")
    with pytest.raises(ValueError, match="needs the embeddings of the flipped images"):
        fuse_flip(e, None, "sum_raw")
    with pytest.raises(ValueError, match="shape"):
        fuse_flip(e, f[:, :3], "sum_raw")
    e[2, 1] = np.inf
    with pytest.raises(ValueError, match="row 2"):
        fuse_flip(e, f, "sum_raw")
    assert set(FLIP_FUSION_MODES) == {"none", "sum_raw", "concat_normalised", "norm_weighted_avg"}
    with pytest.raises(ValueError, match="needs the flip embeddings"):
        evaluate_verification(np.ones((20, 3)), np.arange(10) % 2, fusion="sum_raw")


def test_inputs_are_not_modified():
    rng = np.random.default_rng(6)
    e, f = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    e_copy, f_copy = e.copy(), f.copy()
    evaluate_verification(e, np.arange(20) % 2, flip=f, fusion="norm_weighted_avg")
    evaluate_verification(e, np.arange(20) % 2)
    np.testing.assert_array_equal(e, e_copy)
    np.testing.assert_array_equal(f, f_copy)


def _exhaustive_reference(distances, issame, n_folds=10):
    """Sweep every observed similarity in ascending order, keep the first maximum of the training accuracy."""
    similarity = -np.asarray(distances, dtype=np.float64)
    values = np.unique(similarity)
    candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1] + 1.0]])
    labels = np.asarray(issame, dtype=bool)
    folds = np.array_split(np.arange(len(labels)), n_folds)
    accuracies = []
    for k in range(n_folds):
        test = folds[k]
        train = np.concatenate([f for j, f in enumerate(folds) if j != k])
        best, best_acc = None, -1.0
        for t in candidates:
            acc = np.mean((similarity[train] > t) == labels[train])
            if acc > best_acc:
                best, best_acc = t, acc
        accuracies.append(np.mean((similarity[test] > best) == labels[test]))
    return np.array(accuracies)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_threshold_search_matches_an_ascending_similarity_sweep(seed):
    from qualiface.eval.verification import kfold_accuracy

    rng = np.random.default_rng(seed)
    labels = rng.random(400) < 0.5
    distances = np.round(np.where(labels, rng.normal(0.8, 0.3, 400), rng.normal(1.4, 0.3, 400)), 2)  # with ties
    ours = kfold_accuracy(distances, labels, search="exhaustive")
    np.testing.assert_allclose(ours.fold_accuracies, _exhaustive_reference(distances, labels))
    grid = kfold_accuracy(distances, labels)
    assert not np.array_equal(ours.thresholds, grid.thresholds)
    with pytest.raises(ValueError, match="search"):
        kfold_accuracy(distances, labels, search="everything")
