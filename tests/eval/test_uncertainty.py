"""Uncertainty rejection curves (docs/protocols.md, 'Uncertainty rejection curves') against loop-based float64
references written from the definition, pair-uncertainty combiners, and bad input."""

import numpy as np
import pytest
from sklearn.metrics import auc as sklearn_auc

from qualiface.eval.uncertainty import (
    PAIR_UNCERTAINTY_FUNCTIONS,
    accuracy_rejection_curve,
    default_rejected_portions,
    pair_uncertainty,
    rejection_curve,
)


def ref_rejection(scores, labels, values, fars, portions, mode):
    """The rejection curve with loops: stable sort (negated value in confidence mode), keep int(N(1-p)), per-FAR
    threshold."""
    n = len(scores)
    key = [-v for v in values] if mode == "confidence" else list(values)
    order = sorted(range(n), key=lambda i: key[i])
    out = {far: [] for far in fars}
    for p in portions:
        kept = order[: int(n * (1 - p))]
        gen = [scores[i] for i in kept if labels[i]]
        neg = sorted((scores[i] for i in kept if not labels[i]), reverse=True)
        for far in fars:
            if not gen or not neg:
                out[far].append(np.nan)
                continue
            k = int(np.round(len(neg) * far))
            thr = neg[0] + 1e-8 if k == 0 else neg[k - 1]
            out[far].append(sum(1 for g in gen if g >= thr) / len(gen))
    return out


def make_pairs(rng, n):
    labels = rng.random(n) < 0.4
    conf = np.round(rng.random(n), 2)  # ties
    scores = np.where(labels, 0.2 + 0.5 * conf, 0.0) + np.round(0.2 * rng.standard_normal(n), 3)
    return scores, labels.astype(int), conf


@pytest.mark.parametrize("mode", ["confidence", "uncertainty"])
def test_rejection_curve_matches_loop_reference(mode):
    rng = np.random.default_rng(0)
    scores, labels, conf = make_pairs(rng, 700)
    fars = (0.0, 1e-3, 0.01, 0.1)
    portions = np.arange(0, 0.6, 0.05)
    result = rejection_curve(scores, labels, conf, fars, portions, mode=mode)
    expected = ref_rejection(scores, labels, conf, fars, portions, mode)
    for far in fars:
        np.testing.assert_allclose(result.tar[far], expected[far], rtol=1e-15, atol=0)
        assert result.auc[far] == sklearn_auc(portions, result.tar[far])
    np.testing.assert_array_equal(result.kept_counts, (700 * (1 - portions)).astype(int))


def test_confidence_mode_equals_negated_uncertainty():
    rng = np.random.default_rng(1)
    scores, labels, conf = make_pairs(rng, 500)
    a = rejection_curve(scores, labels, conf, (1e-2,), mode="confidence")
    b = rejection_curve(scores, labels, -conf, (1e-2,), mode="uncertainty")
    np.testing.assert_array_equal(a.tar[1e-2], b.tar[1e-2])


def test_good_confidence_raises_tar_and_default_portions():
    rng = np.random.default_rng(2)
    n = 3000
    labels = np.arange(n) % 2
    conf = rng.random(n)
    scores = np.where(labels == 1, 0.5 * conf + 0.2 * rng.standard_normal(n), 0.1 * rng.standard_normal(n))
    result = rejection_curve(scores, labels, conf, fars=1e-2)
    assert result.portions.size == 251
    assert result.portions[-1] == 0.5
    assert result.portions[1] == 0.002
    np.testing.assert_array_equal(result.portions, default_rejected_portions())
    assert result.tar[1e-2][-1] > result.tar[1e-2][0] + 0.05
    worse = rejection_curve(scores, labels, -conf, fars=1e-2)
    assert result.auc[1e-2] > worse.auc[1e-2]
    k = np.round(result.nonmated_counts * 1e-2)  # continuous scores: exactly k impostors accepted
    np.testing.assert_array_equal(result.achieved_far[1e-2], k / result.nonmated_counts)
    assert len(result.rows()) == 251
    assert result.to_dict()["auc"]["0.01"] == result.auc[1e-2]


def test_accuracy_rejection_fixed_and_per_level():
    rng = np.random.default_rng(3)
    scores, labels, conf = make_pairs(rng, 300)
    portions = np.array([0.0, 0.1, 0.3])
    fixed = accuracy_rejection_curve(scores, labels, conf, portions, threshold=0.2)
    best = accuracy_rejection_curve(scores, labels, conf, portions)
    order = sorted(range(300), key=lambda i: -conf[i])
    for j, p in enumerate(portions):
        kept = order[: int(300 * (1 - p))]
        acc = np.mean([(scores[i] >= 0.2) == labels[i] for i in kept])
        assert fixed.accuracy[j] == pytest.approx(acc, rel=1e-15)
        candidates = sorted({scores[i] for i in kept} | {np.inf})
        accs = [np.mean([(scores[i] >= t) == labels[i] for i in kept]) for t in candidates]
        assert best.accuracy[j] == pytest.approx(max(accs), rel=1e-15)
        assert best.accuracy[j] >= fixed.accuracy[j]
    assert fixed.threshold_rule == "fixed"
    assert best.threshold_rule == "per_level"


def harmonic(values):
    return len(values) / sum(1.0 / v for v in values)


def test_pair_uncertainty_combiners_match_loops():
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0.1, 2.0, (5, 3)), rng.uniform(0.1, 2.0, (5, 3))
    mu_a, mu_b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    expected = {
        "mean": [sum(a[i]) + sum(b[i]) for i in range(5)],
        "sum": [sum(a[i]) + sum(b[i]) for i in range(5)],
        "squared-sum": [sum(a[i]) ** 2 + sum(b[i]) ** 2 for i in range(5)],
        "mul": [np.prod(a[i]) * np.prod(b[i]) for i in range(5)],
        "harmonic-sum": [harmonic(a[i]) + harmonic(b[i]) for i in range(5)],
        "harmonic-mul": [harmonic(a[i]) * harmonic(b[i]) for i in range(5)],
        "harmonic-harmonic": [harmonic(list(a[i]) + list(b[i])) for i in range(5)],
        "squared-harmonic": [harmonic([v**2 for v in list(a[i]) + list(b[i])]) for i in range(5)],
        "min": [min(sum(a[i]), sum(b[i])) for i in range(5)],
        "cosine-analytic": [
            sum(a[i][d] * b[i][d] + mu_a[i][d] ** 2 * b[i][d] + mu_b[i][d] ** 2 * a[i][d] for d in range(3))
            for i in range(5)
        ],
    }
    assert set(expected) == set(PAIR_UNCERTAINTY_FUNCTIONS)
    for name, values in expected.items():
        np.testing.assert_allclose(pair_uncertainty(a, b, name, mu_a=mu_a, mu_b=mu_b), values, rtol=1e-12)
    np.testing.assert_allclose(pair_uncertainty(a[:, 0], b[:, 0], "min"), np.minimum(a[:, 0], b[:, 0]))


def test_bad_input_raises_clear_errors():
    s, y, c = np.array([0.1, 0.5, 0.7, 0.2]), np.array([1, 1, 0, 0]), np.array([0.3, 0.2, 0.9, 0.4])
    with pytest.raises(ValueError, match=r"pair_confidence: 1 non-finite .* index 0"):
        rejection_curve(s, y, np.array([np.nan, 0.2, 0.9, 0.4]))
    with pytest.raises(ValueError, match=r"pair_confidence has 3 values but scores has 4"):
        rejection_curve(s, y, c[:3])
    with pytest.raises(ValueError, match=r"need genuine \(1\) and impostor"):
        rejection_curve(s, np.ones(4), c)
    with pytest.raises(ValueError, match=r"fars: 1.5 is outside"):
        rejection_curve(s, y, c, fars=1.5)
    with pytest.raises(ValueError, match=r"portions: must lie in \[0, 1\); index 1 holds 1.0"):
        rejection_curve(s, y, c, portions=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"strictly increasing"):
        rejection_curve(s, y, c, portions=[0.2, 0.1])
    with pytest.raises(ValueError, match=r"mode: unknown 'scale'"):
        rejection_curve(s, y, c, mode="scale")
    with pytest.raises(ValueError, match=r"harmonic mean needs positive"):
        pair_uncertainty(np.zeros(3), np.ones(3), "harmonic-sum")
    with pytest.raises(ValueError, match=r"needs the embeddings"):
        pair_uncertainty(np.ones(3), np.ones(3), "cosine-analytic")
    with pytest.raises(ValueError, match=r"unknown 'avg'"):
        pair_uncertainty(np.ones(3), np.ones(3), "avg")
    with pytest.raises(ValueError, match=r"threshold: must be finite"):
        accuracy_rejection_curve(s, y, c, threshold=float("nan"))
