"""Honest small samples: a rate below 1/(number of impostor comparisons) is marked not measurable, folds of one
class warn, every NaN is explained (verification, report, EDC, IJB, identification)."""

import math

import numpy as np
import pytest

from qualiface.eval.report import Section, write_report
from qualiface.eval.roc import comparisons_needed, rate_measurable
from qualiface.eval.verification import evaluate_distances, evaluate_verification


def _scores(n_genuine, n_impostor, seed=0):
    rng = np.random.default_rng(seed)
    genuine = rng.normal(0.6, 0.15, n_genuine)
    impostor = rng.normal(0.1, 0.1, n_impostor)
    return genuine, impostor


def _interleaved(n_genuine, n_impostor, seed=0):
    """Cosine scores as squared-L2 distances (2 - 2 cos), classes spread evenly over the rows."""
    genuine, impostor = _scores(n_genuine, n_impostor, seed)
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(n_genuine, bool), np.zeros(n_impostor, bool)])
    order = np.argsort(np.concatenate([np.arange(n_genuine) / n_genuine, np.arange(n_impostor) / n_impostor]))
    return scores[order], labels[order]


@pytest.mark.parametrize(
    ("rate", "needed"), [(1e-6, 1_000_000), (1e-5, 100_000), (1e-3, 1000), (0.1, 10), (3e-4, 3334), (1.0, 1)]
)
def test_comparisons_needed_is_the_smallest_n_with_rate_at_least_one_over_n(rate, needed):
    assert comparisons_needed(rate) == needed
    assert math.isclose(rate * needed, 1.0) or rate * needed > 1.0  # reference: n * rate >= 1
    assert (needed - 1) * rate < 1.0 - 1e-12
    assert rate_measurable(rate, needed)
    assert not rate_measurable(rate, needed - 1)


def test_rate_zero_is_never_measurable():
    assert comparisons_needed(0.0) is None
    assert not rate_measurable(0.0, 10**9)


def test_tar_at_far_below_one_over_n_impostors_is_marked_not_measurable():
    scores, labels = _interleaved(300, 262)
    result = evaluate_distances(2 - 2 * scores, labels, scores=scores)
    assert result.n_impostor == 262
    assert result.far_floor == 1 / 262
    expected = {f"{far:g}": far * 262 >= 1 for far in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)}
    assert result.tar_at_far_measurable == expected
    assert expected["0.01"]
    assert not expected["0.001"]
    assert result.impostors_needed["1e-06"] == 1_000_000
    assert result.tar_at_far["1e-06"] == result.tar_at_far["1e-06"]  # the value is kept (not None)
    assert any("1e-06, 1e-05, 0.0001, 0.001 cannot be measured on 262 impostor pairs" in w for w in result.warnings)
    assert result.val_measurable is False  # 10 folds: at most 236 training impostors < 1000
    plain = result.to_dict()
    assert plain["tar_at_far_measurable"]["1e-06"] is False
    assert "TAR@FAR=1e-3 n/m (needs ≥ 1,000 impostor pairs, has 262)" in result.summary()


def test_large_enough_sets_are_measurable_and_quiet():
    scores, labels = _interleaved(3000, 12000)
    result = evaluate_distances(2 - 2 * scores, labels, scores=scores)
    assert result.tar_at_far_measurable == {
        "1e-06": False,
        "1e-05": False,
        "0.0001": True,
        "0.001": True,
        "0.01": True,
        "0.1": True,
    }
    assert result.val_measurable  # 10,800 training impostors per fold
    assert set(result.nan_reasons) == {"all_pairs_thresholds"}  # the ROC's leading +inf threshold only
    assert "n/m" not in result.summary()


def test_report_shows_not_measurable_with_the_count_needed(tmp_path):
    scores, labels = _interleaved(300, 262)
    result = evaluate_distances(2 - 2 * scores, labels, scores=scores)
    text = write_report([Section.from_result("v", result)], tmp_path / "r.md").read_text()
    assert "| tar_at_far.1e-06 | n/m (needs ≥ 1,000,000 impostor pairs, has 262) |" in text
    assert "| tar_at_far.0.01 | " + f"{result.tar_at_far['0.01']:.6g} |" in text
    assert "| val | n/m" in text


def test_folds_of_one_class_warn_and_every_nan_is_explained(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 16))
    b = np.concatenate([a[:50] + 0.3 * rng.normal(size=(50, 16)), rng.normal(size=(50, 16))])
    issame = np.arange(100) < 50  # sorted list: the first five folds genuine only, the last five impostor only
    result = evaluate_verification(a, issame, embeddings_b=b, far_target=0.1)  # 40+ training impostors: measurable
    assert np.isnan(result.fold_val[5:]).all()
    assert np.isnan(result.fold_far[:5]).all()
    assert math.isnan(result.val)
    warning = next(w for w in result.warnings if "only genuine" in w)
    assert "fold(s) 0-4 hold only genuine pairs and fold(s) 5-9 hold only impostor pairs" in warning
    plain = result.to_dict()
    nan_fields = {k for k, v in plain.items() if v is None or (isinstance(v, list) and None in v)}
    assert nan_fields <= set(result.nan_reasons)
    assert {"val", "fold_val", "far", "fold_far"} <= set(result.nan_reasons)
    assert "5-9" in result.nan_reasons["fold_val"]
    text = write_report([Section.from_result("v", result)], tmp_path / "r.md").read_text()
    assert "| val | nan: the mean over the folds includes NaN folds (5-9) |" in text


def test_interleaved_folds_do_not_warn_about_classes():
    scores, labels = _interleaved(500, 500)
    result = evaluate_distances(2 - 2 * scores, labels, scores=scores)
    assert not any("only" in w for w in result.warnings)
    assert not np.isnan(result.fold_val).any()


# ---------------------------------------------------------------------------- EDC


def _edc_set(n_mated=300, n_nonmated=140, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_mated, int), np.zeros(n_nonmated, int)]
    quality = rng.random(labels.size)
    scores = np.where(labels == 1, 0.3 + 0.4 * quality, 0.05) + 0.1 * rng.standard_normal(labels.size)
    return scores, labels, quality


def test_fixed_threshold_edc_reports_the_fmr_it_achieves_and_marks_targets_below_one_over_n():
    from qualiface.eval.edc import edc

    scores, labels, quality = _edc_set()
    result = edc(scores, labels, quality, fmr=[1e-3, 0.01])
    nonmated = scores[labels == 0].astype(np.float64)
    for target, measurable in ((1e-3, False), (0.01, True)):
        curve = result.curves[f"fmr={target:g}"]
        tau = np.quantile(nonmated, 1 - target)  # dasec's threshold, recomputed here
        assert curve.fmr_target == target
        assert curve.nonmated_count == 140
        assert curve.achieved_fmr == np.count_nonzero(nonmated >= tau) / 140
        assert curve.measurable is measurable
    low = result.curves["fmr=0.001"]
    assert low.achieved_fmr == 1 / 140  # "FMR 1e-3" is really 0.7 % on 140 non-mated pairs
    assert "needs ≥ 1,000" in low.note
    assert result.curves["fmr=0.01"].note == ""
    assert [w.split(":")[0] for w in result.warnings] == ["fmr=0.001"]
    plain = result.to_dict()["curves"]["fmr=0.001"]
    assert (plain["measurable"], plain["achieved_fmr"]) == (False, 1 / 140)
    summary = result.summary()
    assert summary["fmr=0.001/measurable"] is False
    assert summary["fmr=0.01/measurable"] is True
    assert summary["fmr=0.001/achieved_fmr"] == 1 / 140


def test_edc_references_keep_the_small_sample_fields():
    from qualiface.eval.edc import edc_oracle, edc_random

    scores, labels, _ = _edc_set()
    for ref in (edc_oracle(scores, labels, fmr=1e-3), edc_random(scores, labels, fmr=1e-3, progress=False)):
        curve = ref.curves["fmr=0.001"]
        assert (curve.fmr_target, curve.measurable, curve.nonmated_count) == (1e-3, False, 140)


def test_recomputed_erc_marks_the_levels_with_too_few_kept_nonmated_pairs():
    from qualiface.eval.edc import edc

    scores, labels, quality = _edc_set(n_mated=500, n_nonmated=1200)
    curve = edc(scores, labels, quality, convention="crfiqa", fmr=1e-3).curves["fmr=0.001"]
    expected = curve.nonmated_counts * 1e-3 >= 1  # n * rate >= 1, independently
    np.testing.assert_array_equal(curve.measurable, expected)
    assert expected[0]
    assert not expected.all()
    assert "not measurable" in curve.note
    assert curve.to_dict()["measurable"] == expected.tolist()


# ---------------------------------------------------------------------------- IJB and 1:N identification


def test_ijb_verification_marks_far_targets_below_one_over_n_impostors(tmp_path):
    from qualiface.eval.ijb.verification import verification_from_scores

    genuine, impostor = _scores(500, 262)
    scores = np.concatenate([genuine, impostor])
    labels = np.r_[np.ones(500, int), np.zeros(262, int)]
    result = verification_from_scores(scores, labels)
    assert result.tar_at_far_measurable == {far: far * 262 >= 1 for far in result.tar_at_far}
    assert result.tar_at_far_measurable[1e-6] is False
    assert result.tar_at_far_measurable[0.01] is True
    assert "TAR: n/m | n/m | n/m | n/m |" in result.summary()
    assert result.to_dict()["tar_at_far_measurable"]["1e-06"] is False
    rows = result.rows()
    assert [row["measurable"] for row in rows] == [False, False, False, False, True, True]
    text = write_report([Section.from_result("ijb", result)], tmp_path / "r.md").read_text()
    assert "| tar_at_far.1e-06 | n/m (needs ≥ 1,000,000 impostor pairs, has 262) |" in text


def test_ijb_identification_marks_fpir_below_one_over_nonmated_probes():
    from qualiface.eval.ijb.results import GalleryIdentification, IJBIdentificationResult

    fars = np.array([1e-3, 1e-2, 1e-1])

    def gallery(n_nonmated):
        return GalleryIdentification("g", 10, 50, n_nonmated, {1: 40}, {1: 0.8}, fars, np.zeros(3), np.ones(3))

    small, large = gallery(150), gallery(2000)
    np.testing.assert_array_equal(small.fpir_measurable, fars * 150 >= 1)
    np.testing.assert_array_equal(large.fpir_measurable, [True, True, True])
    result = IJBIdentificationResult(
        "p", 100, {1: 0.8}, {1e-3: 0.5, 0.1: 0.9}, fars, np.ones(3), {"a": small, "b": large}
    )
    assert result.tpir_at_fpir_measurable == {1e-3: False, 0.1: True}
    assert [row["measurable"] for row in result.rows()] == [False, True, True]


def test_open_set_identification_marks_fpir_below_one_over_nonmated_probes():
    from qualiface.eval.identification import identification

    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(20, 8))
    probes = np.concatenate([gallery + 0.1 * rng.normal(size=(20, 8)), rng.normal(size=(30, 8))])
    labels = np.r_[np.arange(20), np.arange(100, 130)]
    result = identification(probes, labels, gallery, np.arange(20), ranks=(1,), fpirs=(0.01, 0.1), normalize=True)
    assert result.n_nonmated == 30
    assert result.fpir_measurable == {0.01: False, 0.1: True}  # 0.01 * 30 < 1 <= 0.1 * 30
    assert result.nonmated_needed == {0.01: 100, 0.1: 10}
    assert result.to_dict()["fpir_measurable"] == {"0.01": False, "0.1": True}
    assert any("FPIR 0.01" in w for w in result.warnings)
