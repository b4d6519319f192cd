"""threshold_at_fmr: each named rule gives the threshold its call site computed before the rules were merged.

The ``old_*`` functions are the former call-site code, verbatim but for names: ``use.threshold_at_fmr``
(calibration), the fixed-threshold EDC's ``numpy.quantile``, the IJB 1:N thresholds of ``ijb_evals.py`` and the
TinyFace ``find_thresholds_by_FAR``.
"""

import math

import numpy as np
import pytest

from qualiface.eval.edc import edc
from qualiface.eval.identification import identification
from qualiface.eval.ijb import open_set_identification
from qualiface.eval.roc import threshold_at_fmr

# 10 impostor scores, shuffled, with a tie at 0.8: descending 0.9, 0.8, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0
SCORES = np.array([0.3, 0.8, 0.0, 0.9, 0.5, 0.2, 0.8, 0.7, 0.1, 0.4])
FMRS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 0.99, 1.0)


def old_calibration(impostor_scores, fmr):
    scores = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    allowed = math.floor(fmr * scores.size)
    if allowed >= scores.size:
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))


def old_edc(nonmated, fmrs):
    return np.quantile(nonmated, [1 - f for f in fmrs])


def old_ijb_evals(nonmated_max, fars):
    desc = np.sort(nonmated_max)[::-1]
    return desc[np.maximum((nonmated_max.size * np.asarray(fars)).astype(np.int64) - 1, 0)]


def old_tinyface(nonmated_max, fpir):
    desc = np.sort(nonmated_max)[::-1]
    false_alarms = int(np.round(nonmated_max.size * fpir))
    return desc[0] + 1e-5 if false_alarms == 0 else desc[false_alarms - 1]


def test_rules_give_the_former_call_site_values():
    for fmr in FMRS:
        if 0 < fmr < 1:
            assert threshold_at_fmr(SCORES, fmr) == old_calibration(SCORES, fmr)
            assert threshold_at_fmr(SCORES, fmr, rule="at_most") == old_calibration(SCORES, fmr)
        assert threshold_at_fmr(SCORES, fmr, rule="tinyface") == old_tinyface(SCORES, fmr)
    np.testing.assert_array_equal(threshold_at_fmr(SCORES, FMRS, rule="quantile"), old_edc(SCORES, FMRS))
    np.testing.assert_array_equal(threshold_at_fmr(SCORES, FMRS, rule="ijb_evals"), old_ijb_evals(SCORES, FMRS))
    for rule in ("at_most", "quantile", "ijb_evals", "tinyface"):  # one target or several: the same numbers
        many = threshold_at_fmr(SCORES, FMRS, rule=rule)
        assert isinstance(many, np.ndarray)
        assert many.shape == (len(FMRS),)
        assert [threshold_at_fmr(SCORES, f, rule=rule) for f in FMRS] == many.tolist()


def test_rules_on_a_worked_example():
    # fmr = 0.25 on 10 scores: fmr·n = 2.5 is not an integer
    assert threshold_at_fmr(SCORES, 0.25, rule="at_most") == np.nextafter(0.8, np.inf)  # floor: 2, just above s(3)
    assert threshold_at_fmr(SCORES, 0.25, rule="quantile") == pytest.approx(0.775, abs=1e-15)  # h = 6.75
    assert threshold_at_fmr(SCORES, 0.25, rule="ijb_evals") == 0.8  # int: 2, s(2), strict
    assert threshold_at_fmr(SCORES, 0.25, rule="tinyface") == 0.8  # round half to even: 2, s(2)
    # too few impostors for fmr = 0.05 (fmr·n = 0.5)
    assert threshold_at_fmr(SCORES, 0.05, rule="at_most") == np.nextafter(0.9, np.inf)
    assert threshold_at_fmr(SCORES, 0.05, rule="quantile") == pytest.approx(0.855, abs=1e-15)
    assert threshold_at_fmr(SCORES, 0.05, rule="ijb_evals") == 0.9
    assert threshold_at_fmr(SCORES, 0.05, rule="tinyface") == 0.9 + 1e-5


def test_bad_arguments():
    with pytest.raises(ValueError, match="rule: unknown 'nearest'"):
        threshold_at_fmr(SCORES, 0.1, rule="nearest")
    with pytest.raises(ValueError, match=r"fmr: 1\.5 is outside"):
        threshold_at_fmr(SCORES, 1.5)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        threshold_at_fmr(np.array([]), 0.1)


def test_call_sites_use_the_rules():
    rng = np.random.default_rng(0)
    s = rng.normal(size=400)
    mated = rng.random(400) < 0.3
    result = edc(s, mated, rng.random(400), fmr=(0.01, 0.1), starting_error=0.05, error="fmr")
    assert result.curves["fmr=0.01"].threshold == threshold_at_fmr(s[~mated], 0.01, rule="quantile")
    assert result.curves["fmr=0.1"].threshold == old_edc(s[~mated], (0.01, 0.1))[1]
    assert result.curves["starting_error=0.05"].threshold == threshold_at_fmr(s[~mated], 0.05, rule="quantile")

    probe, gallery = rng.normal(size=(60, 8)), rng.normal(size=(20, 8))
    probe_ids, gallery_ids = rng.integers(0, 30, size=60), np.arange(20)
    nonmated = ~np.isin(probe_ids, gallery_ids)
    nonmated_max = (probe @ gallery.T)[nonmated].max(axis=1)
    fars = (0.01, 0.1, 0.3, 1.0)
    ijb = open_set_identification(probe, probe_ids, gallery, gallery_ids, fars=fars)
    np.testing.assert_array_equal(ijb.thresholds, old_ijb_evals(nonmated_max, fars))
    tiny = identification(probe, probe_ids, gallery, gallery_ids, fpirs=(0.0, 0.1, 0.3), normalize=False)
    assert tiny.thresholds == {f: old_tinyface(nonmated_max, f) for f in (0.0, 0.1, 0.3)}


def test_calibration_uses_the_at_most_rule():
    from qualiface.use import threshold_at_fmr as calibration_threshold

    for fmr in (0.05, 0.1, 0.25, 0.5):
        assert calibration_threshold(SCORES, fmr) == old_calibration(SCORES, fmr)
    with pytest.raises(ValueError, match="no impostor pairs to calibrate on"):
        calibration_threshold(np.array([]), 0.1)
    with pytest.raises(ValueError, match=r"fmr must be in \(0, 1\)"):
        calibration_threshold(SCORES, 1.0)
