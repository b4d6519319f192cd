"""ROC, TAR@FAR, EER and AUC against scikit-learn and loop references written from the definitions."""

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics

from qualiface.eval.roc import (
    IJB_FARS,
    auc,
    decimate_roc,
    eer,
    roc_counts,
    roc_curve,
    tar_at_far,
    tar_at_far_from_roc,
)


def _data(seed: int, n: int = 3000, ties: bool = True, dtype=np.float64, pos_rate: float = 0.2):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_rate).astype(np.int64)
    scores = rng.normal(size=n) + 1.5 * labels
    if ties:
        scores = np.round(scores * 4) / 4  # few distinct values: many ties within and across classes
    return scores.astype(dtype), labels


def _nearest_reference(fpr, tpr, far):
    """insightface eval_ijbc.py: reversed arrays, min over (|fpr - x|, index) tuples."""
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, min_index = min(zip(abs(fpr - far), range(len(fpr)), strict=True))
    return tpr[min_index]


def _conservative_reference(scores, labels, far):
    """Largest TAR over all thresholds (accept s >= t, plus 'accept nothing') whose FAR is <= far."""
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    best = 0.0
    for t in np.unique(scores):
        fa = float(np.sum(neg >= t)) / len(neg)
        ta = float(np.sum(pos >= t)) / len(pos)
        if fa <= far and ta > best:
            best = ta
    return best


@pytest.mark.parametrize("drop_intermediate", [True, False])
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roc_curve_identical_to_sklearn(drop_intermediate, ties, dtype):
    for seed in range(3):
        scores, labels = _data(seed, ties=ties, dtype=dtype)
        ours = roc_curve(scores, labels, drop_intermediate=drop_intermediate)
        ref = metrics.roc_curve(labels, scores, drop_intermediate=drop_intermediate)
        for a, b in zip(ours, ref, strict=True):
            assert a.dtype == np.float64
            np.testing.assert_array_equal(a, b)


def test_roc_curve_starts_at_origin_with_infinite_threshold():
    scores, labels = _data(5)
    fpr, tpr, thr = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], thr[0]) == (0.0, 0.0, np.inf)
    assert fpr[-1] == 1.0
    assert tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0)
    assert np.all(np.diff(tpr) >= 0)


@pytest.mark.parametrize(
    ("scores", "labels"),
    [
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]),  # a single distinct score
        ([0.9, 0.1], [1, 0]),
        ([0.1, 0.9], [1, 0]),
        ([1, 2, 2, 3, 3, 3], [0, 0, 1, 1, 0, 1]),  # integer scores
    ],
)
def test_roc_curve_small_cases_match_sklearn(scores, labels):
    for drop in (True, False):
        ours = roc_curve(np.asarray(scores), np.asarray(labels), drop_intermediate=drop)
        ref = metrics.roc_curve(labels, scores, drop_intermediate=drop)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bool_labels_equal_integer_labels():
    scores, labels = _data(7)
    for a, b in zip(roc_curve(scores, labels.astype(bool)), roc_curve(scores, labels), strict=True):
        np.testing.assert_array_equal(a, b)


def test_roc_counts_float32_thresholds_keep_score_dtype():
    scores, labels = _data(2, dtype=np.float32)
    counts = roc_counts(scores, labels)
    assert counts.thresholds.dtype == np.float32
    assert counts.n_pos == labels.sum()
    assert counts.n_neg == (labels == 0).sum()
    assert counts.fps[-1] == counts.n_neg
    assert counts.tps[-1] == counts.n_pos


@pytest.mark.parametrize("seed", range(4))
def test_tar_at_far_nearest_matches_insightface_loop(seed):
    scores, labels = _data(seed, n=20000, ties=seed % 2 == 0, pos_rate=0.05)
    fars = [1e-4, 1e-3, 3e-3, 1e-2, 0.05, 0.1, 0.5, 1.0, 0.0]
    ours = tar_at_far(scores, labels, fars, mode="nearest")
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    for far in fars:
        assert ours[far] == _nearest_reference(fpr, tpr, far)


@pytest.mark.parametrize("seed", range(4))
def test_tar_at_far_conservative_matches_threshold_loop(seed):
    scores, labels = _data(seed, n=4000, ties=seed % 2 == 0)
    fars = [0.0, 1e-3, 0.01, 0.02, 0.1, 0.3, 1.0]
    ours = tar_at_far(scores, labels, fars, mode="conservative")
    for far in fars:
        assert ours[far] == pytest.approx(_conservative_reference(scores, labels, far), abs=1e-15)


def test_nearest_and_conservative_differ_as_documented():
    # Impostors 0..9, genuine 9.5, 8.5, 7.5, 2.5. drop_intermediate ROC: (0,0) (0,.25) (.1,.25) (.1,.5) (.2,.5)
    # (.2,.75) (.7,.75) (.7,1) (1,1). At FAR 0.14 the nearest FPR is 0.1, whose highest TPR is 0.5; at 0.16 the
    # nearest FPR is 0.2 (above the target), TPR 0.75. Conservative: largest TPR with FPR <= target.
    neg = np.arange(10, dtype=np.float64)
    pos = np.array([9.5, 8.5, 7.5, 2.5])
    scores = np.r_[neg, pos]
    labels = np.r_[np.zeros(10), np.ones(4)].astype(int)
    nearest = tar_at_far(scores, labels, [0.14, 0.16], mode="nearest")
    conservative = tar_at_far(scores, labels, [0.14, 0.16], mode="conservative")
    assert nearest == {0.14: 0.5, 0.16: 0.75}
    assert conservative == {0.14: 0.5, 0.16: 0.5}


def test_conservative_uses_points_dropped_from_sloped_segments():
    # Impostor/genuine alternate in tied pairs: the full ROC walks a straight diagonal whose intermediate points
    # drop_intermediate removes; the conservative TAR at FAR 0.5 must still see the point (0.5, 0.5).
    scores = np.array([4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    fpr, _, _ = roc_curve(scores, labels)
    assert 0.5 not in fpr
    assert tar_at_far(scores, labels, [0.5], mode="conservative") == {0.5: 0.5}


def test_nearest_tie_goes_to_highest_tpr_at_that_fpr():
    # Every genuine score is above every impostor: at FAR 0 both (0, 0) and (0, 1) are ROC points; the rule on
    # the reversed arrays picks the highest TPR.
    scores = np.array([5.0, 4.0, 1.0, 0.0, 2.0])
    labels = np.array([1, 1, 0, 0, 1])
    fpr, tpr, _ = roc_curve(scores, labels)
    assert tar_at_far(scores, labels, [0.0])[0.0] == _nearest_reference(fpr, tpr, 0.0) == 1.0


def test_tar_at_far_from_roc_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        tar_at_far_from_roc(np.array([0.0, 1.0]), np.array([0.0, 1.0]), [0.1], mode="closest")  # type: ignore[arg-type]


def test_tar_at_far_rejects_far_outside_unit_interval():
    scores, labels = _data(0)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        tar_at_far(scores, labels, [1.5])


def test_default_fars_are_the_ijb_grid():
    scores, labels = _data(1)
    assert list(tar_at_far(scores, labels)) == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1] == list(IJB_FARS)


@pytest.mark.parametrize("seed", range(3))
def test_eer_matches_brentq_recipe_without_ties(seed):
    scores, labels = _data(seed, ties=False)
    value, threshold = eer(scores, labels)
    fpr, tpr, thr = metrics.roc_curve(labels, scores)
    reference = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert value == pytest.approx(reference, abs=1e-9)
    # The threshold is that of the first point of the full ROC (highest threshold) where FNR <= FPR.
    fpr, tpr, thr = metrics.roc_curve(labels, scores, drop_intermediate=False)
    first = int(np.flatnonzero(1 - tpr <= fpr)[0])
    assert threshold == thr[first]


def test_eer_interpolates_linearly_between_roc_points():
    # Loop reference over the full ROC from the definition: first segment where FNR - FPR changes sign.
    for seed in range(3):
        scores, labels = _data(seed, n=500, ties=True)
        fpr, tpr, thr = metrics.roc_curve(labels, scores, drop_intermediate=False)
        fnr = 1.0 - tpr
        for i in range(1, len(fpr)):
            if fnr[i] <= fpr[i]:
                d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
                t = d0 / (d0 - d1)
                expected = (fpr[i - 1] + t * (fpr[i] - fpr[i - 1]), thr[i])
                break
        value, threshold = eer(scores, labels)
        assert value == pytest.approx(expected[0], abs=1e-12)
        assert threshold == expected[1]
        assert value == pytest.approx(fnr[i - 1] + t * (fnr[i] - fnr[i - 1]), abs=1e-12)  # FNR = FPR there


def test_eer_of_separable_scores_is_zero_and_of_reversed_scores_is_one():
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    assert eer(scores, np.array([1, 1, 0, 0]))[0] == 0.0
    assert eer(scores, np.array([0, 0, 1, 1]))[0] == 1.0


@pytest.mark.parametrize("drop", [True, False])
def test_auc_matches_sklearn(drop):
    scores, labels = _data(3)
    fpr, tpr, _ = roc_curve(scores, labels, drop_intermediate=drop)
    assert auc(fpr, tpr) == pytest.approx(metrics.auc(fpr, tpr), abs=1e-15)
    assert auc(fpr, tpr) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert auc(fpr[::-1], tpr[::-1]) == pytest.approx(auc(fpr, tpr), abs=1e-15)


def test_auc_rejects_non_monotonic_x():
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        auc(np.array([0.0, 0.5, 0.2, 1.0]), np.array([0.0, 0.5, 0.6, 1.0]))


def test_nan_scores_raise_with_count_and_first_index():
    scores, labels = _data(0, n=100)
    scores[[17, 40]] = np.nan
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\).*first at index 17"):
        roc_curve(scores, labels)


def test_inf_scores_raise():
    scores, labels = _data(0, n=100)
    scores[3] = np.inf
    with pytest.raises(ValueError, match="index 3"):
        tar_at_far(scores, labels)


@pytest.mark.parametrize("value", [0, 1])
def test_single_class_raises(value):
    with pytest.raises(ValueError, match="single class"):
        roc_curve(np.arange(5.0), np.full(5, value))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="different lengths: 5 and 4"):
        eer(np.arange(5.0), np.array([0, 1, 0, 1]))


def test_labels_other_than_zero_and_one_raise():
    with pytest.raises(ValueError, match=r"labels must be 0 or 1.*index 2 \(2\)"):
        roc_curve(np.arange(4.0), np.array([0, 1, 2, 1]))


def test_empty_and_two_dimensional_inputs_raise():
    with pytest.raises(ValueError, match="empty"):
        roc_curve(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="1-D"):
        roc_curve(np.zeros((2, 2)), np.zeros((2, 2)))


def test_decimate_roc_keeps_actual_points_and_both_ends():
    scores, labels = _data(0, n=50000, ties=False)
    fpr, tpr, thr = roc_curve(scores, labels)
    assert fpr.shape[0] > 300
    f, t, h = decimate_roc(fpr, tpr, thr, max_points=200)
    assert f.shape[0] <= 200
    assert (f[0], t[0], f[-1], t[-1]) == (fpr[0], tpr[0], fpr[-1], tpr[-1])
    index = np.searchsorted(thr[::-1], h[1:])  # every kept point is an actual ROC point
    np.testing.assert_array_equal(thr[::-1][index], h[1:])
    np.testing.assert_array_equal(fpr[len(fpr) - 1 - index], f[1:])
