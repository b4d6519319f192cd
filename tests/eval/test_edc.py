"""EDC / ERC: expected values T1–T3 on the synthetic quality data set below (T1 fixed-threshold EDC, T2 CR-FIQA
ERC, T3 MagFace ERC, as computed by the official code: ``dasec/quality-assessment-evaluation: edc.py``,
``fdbtrs/CR-FIQA: ERC/erc.py``, ``IrvingMeng/MagFace: eval/eval_quality/eval_quality.py``), loop-based float64
references written from the definitions (docs/protocols.md, 'Fixed-threshold EDC', 'CR-FIQA ERC', 'MagFace ERC'),
reference curves, bounds and bad input."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import auc as sklearn_auc

from qualiface.eval.edc import (
    FixedThresholdEDC,
    RecomputedThresholdERC,
    area_under_theoretical_best,
    edc,
    edc_fixed_threshold,
    edc_oracle,
    edc_pauc,
    edc_random,
    erc_discard_grid,
    erc_recomputed_threshold,
    normalize_quality,
    pair_quality,
)
from qualiface.eval.edc.kept import _KeptCounter

# ------------------------------------------------------------------------------------ synthetic quality data set


def synthetic_quality_set():
    """Synthetic quality data set: 3,000 pairs, float64, pair i mated iff i mod 5 == 0 (600 mated, 2,400 non-mated);
    qualities a, b and noise c are fractional parts of 0.5 + i·(irrational step), pair quality min(a, b), and the
    mated similarity grows with the pair quality."""
    i = np.arange(3000, dtype=np.float64)

    def frac(x):
        return x - np.floor(x)

    a = frac(0.5 + i * 0.6180339887498949)
    b = frac(0.5 + i * 0.7548776662466927)
    c = frac(0.5 + i * 0.5698402909980532)
    q = np.minimum(a, b)
    mated = np.arange(3000) % 5 == 0
    s = np.where(mated, 0.15 + 0.6 * q + 0.4 * (c - 0.5), 0.05 + 0.5 * (c - 0.5) * (0.3 + 0.7 * (1 - q)))
    return a, b, s, mated.astype(int)


def step_value(x, y, at):
    """FNMR at the last curve point with x <= at."""
    return y[np.flatnonzero(x <= at)[-1]]


def test_synthetic_set_spot_checks():
    q1, q2, s, y = synthetic_quality_set()
    assert (y == 1).sum() == 600
    assert (y == 0).sum() == 2400
    for i, expected in (
        (0, (0.5, 0.5, 0.45, 1)),
        (1, (0.118034, 0.254878, -0.147309, 0)),
        (5, (0.590170, 0.274388, 0.254314, 1)),
    ):
        np.testing.assert_allclose((q1[i], q2[i], s[i]), expected[:3], atol=5e-7)
        assert y[i] == expected[3]


# ------------------------------------------------------------------------------------------ T1 fixed threshold

T1 = {
    0.05: (0.06205803644458682, (0.05, 0.0277778, 0.00625, 0.0), 0.0057502950789448, 0.0060215391370669, 0.00125),
    0.10: (0.116913427126575, (0.10, 0.0685185, 0.0395833, 0.0119048), 0.0140135356049434, 0.0163022055481748, 0.005),
}


@pytest.mark.parametrize("e0", sorted(T1))
def test_t1_fixed_threshold_edc(e0):
    q1, q2, s, y = synthetic_quality_set()
    tau, steps, pauc2, pauc3, best = T1[e0]
    result = edc(s, y, q1, q2, starting_error=e0)
    curve = result.curves[f"starting_error={e0:g}"]
    assert isinstance(curve, FixedThresholdEDC)
    assert curve.threshold == pytest.approx(tau, rel=1e-14)
    assert curve.discard_fractions.size == 601
    assert curve.comparison_count == 600
    for at, expected in zip((0.0, 0.1, 0.2, 0.3), steps, strict=True):
        assert step_value(curve.discard_fractions, curve.error_fractions, at) == pytest.approx(expected, abs=5e-8)
    assert curve.pauc[0.2] == pytest.approx(pauc2, abs=1e-16)
    assert curve.pauc[0.3] == pytest.approx(pauc3, abs=1e-16)
    assert curve.area_best[0.2] == pytest.approx(best, rel=1e-12)
    assert curve.area_best[0.3] == pytest.approx(best, rel=1e-12)
    assert curve.pauc_minus_best[0.2] == pytest.approx(pauc2 - best, abs=1e-15)


# ------------------------------------------------------------------------------------------ T2 CR-FIQA, T3 MagFace

T2 = {
    1e-2: (
        [0.343333, 0.314035, 0.287037, 0.264591, 0.224280, 0.189011, 0.153302, 0.135550, 0.091160, 0.079882,
         0.055556, 0.022388, 0.016878, 0.004762, 0, 0, 0, 0, 0, 0],
        0.100505,
    ),
    1e-3: (
        [0.391667, 0.345614, 0.311111, 0.291829, 0.255144, 0.228571, 0.198113, 0.156010, 0.124309, 0.106509,
         0.081699, 0.029851, 0.021097, 0.004762, 0, 0, 0.008197, 0.011111, 0.014493, 0.035714],
        0.120106,
    ),
    1e-4: (
        [0.4, 0.368421, 0.318519, 0.299611, 0.265432, 0.232967, 0.205189, 0.168798, 0.127072, 0.112426,
         0.088235, 0.052239, 0.025316, 0.009524, 0.005556, 0.006667, 0.008197, 0.011111, 0.014493, 0.035714],
        0.126881,
    ),
}  # fmt: skip

T3 = [0.39, 0.343860, 0.309259, 0.289883, 0.255144, 0.228571, 0.198113, 0.156010, 0.121547, 0.103550, 0.078431,
      0.026119, 0.021097, 0.004762, 0, 0, 0, 0, 0, 0]  # fmt: skip


def test_t2_crfiqa_erc():
    q1, q2, s, y = synthetic_quality_set()
    result = erc_recomputed_threshold(s, y, q1, q2, fmr=(1e-2, 1e-3, 1e-4))
    assert result.convention == "crfiqa"
    for target, (fnmr, area) in T2.items():
        curve = result.curves[f"fmr={target:g}"]
        assert isinstance(curve, RecomputedThresholdERC)
        np.testing.assert_allclose(curve.discard_fractions, np.arange(0, 0.98, 0.05), rtol=0, atol=0)
        np.testing.assert_allclose(curve.error_fractions, fnmr, rtol=0, atol=5e-7)
        assert curve.auc == pytest.approx(area, abs=5e-7)
        assert curve.auc == sklearn_auc(curve.discard_fractions, curve.error_fractions)


def test_t3_magface_erc():
    q1, q2, s, y = synthetic_quality_set()
    result = edc(s, y, q1, q2, convention="magface", fmr=1e-3)
    curve = result.curves["fmr=0.001"]
    np.testing.assert_allclose(curve.error_fractions, T3, rtol=0, atol=5e-7)
    assert curve.auc == pytest.approx(0.116567, abs=5e-7)
    # 3,000 pairs, 2,400 impostors: idx = 2, so the threshold is the 3rd-smallest impostor distance
    d = np.arccos(np.clip(s, -1, 1)) / math.pi
    assert curve.thresholds[0] == np.sort(d[y == 0])[2]


# ------------------------------------------------------------------------------------------ loop references


def ref_fixed_edc(s, q, tau, error="fnmr"):
    """Fixed-threshold EDC (docs/protocols.md, 'Fixed-threshold EDC') from the definition, with loops: stable sort,
    ties discarded together, appended (1, 0)."""
    n = len(s)
    order = sorted(range(n), key=lambda i: q[i])
    qs = [float(q[i]) for i in order]
    ss = [float(s[i]) for i in order]
    is_error = [(v < tau) if error == "fnmr" else (v >= tau) for v in ss]
    xs, ys = [], []
    for k in range(n):
        if k == 0 or qs[k - 1] != qs[k]:
            xs.append(k / n)
            ys.append(sum(is_error[k:]) / (n - k))
    if xs[-1] != 1:
        xs.append(1.0)
        ys.append(0.0)
    error_counts = [sum(is_error[k:]) for k in range(n)]
    return xs, ys, error_counts


def ref_pauc(xs, ys, limit):
    area = 0.0
    for j in range(len(xs)):
        if xs[j] >= limit:
            break
        right = xs[j + 1] if j + 1 < len(xs) else limit
        area += ys[j] * (min(right, limit) - xs[j])
    return area


def ref_crfiqa(d, mated, q, fmr):
    """CR-FIQA ERC (docs/protocols.md, 'CR-FIQA ERC') from the definition, with loops over levels and candidate
    thresholds."""
    n = len(d)
    order = sorted(range(n), key=lambda i: q[i])
    out = []
    for u in np.arange(0, 0.98, 0.05):
        kept = order[int(u * n) :]
        gen = [d[i] for i in kept if mated[i]]
        imp = [d[i] for i in kept if not mated[i]]
        if not gen or not imp:
            out.append(math.nan)
            continue
        best_t, best_diff = None, math.inf
        for t in sorted(set(gen + imp), reverse=True):  # descending distance, first minimiser wins
            diff = abs(sum(1 for v in imp if v <= t) / len(imp) - fmr)
            if diff < best_diff:
                best_t, best_diff = t, diff
        out.append(1 - sum(1 for v in gen if v < best_t) / len(gen))
    return out


def ref_magface(d, mated, q, divisions=3):
    """MagFace ERC (docs/protocols.md, 'MagFace ERC') from the definition: idx = int(idx / 10) `divisions` times,
    FNMR with >=; nothing recorded if idx hits 0 before the last division."""
    n = len(d)
    order = sorted(range(n), key=lambda i: q[i])
    out = []
    for u in np.arange(0, 0.98, 0.05):
        kept = order[int(u * n) :]
        gen = [d[i] for i in kept if mated[i]]
        imp = sorted(d[i] for i in kept if not mated[i])
        idx, value = len(imp) - 1, math.nan
        for step in range(divisions + 1):
            if idx < 0:
                break
            if step == divisions:
                value = sum(1 for g in gen if g >= imp[idx]) / len(gen) if gen else math.nan
                break
            if idx == 0:
                break
            idx = int(idx / 10)
        out.append(value)
    return out


def random_pairs(rng, n, tie_decimals=1, mated_fraction=0.4):
    s = np.round(rng.uniform(-0.2, 0.9, n), 2)  # score ties, some exactly at quantiles
    mated = rng.random(n) < mated_fraction
    s = np.where(mated, np.minimum(s + 0.25, 1.0), s)
    qa = np.round(rng.random(n), tie_decimals)  # many quality ties
    qb = np.round(rng.random(n), tie_decimals)
    return s, mated.astype(np.int64), qa, qb


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("error", ["fnmr", "fmr"])
def test_fixed_threshold_matches_loop_reference(seed, error):
    rng = np.random.default_rng(seed)
    s, y, qa, qb = random_pairs(rng, 400)
    result = edc(s, y, qa, qb, fmr=(1e-2, 0.1), starting_error=0.07, error=error, discard_limits=(0.2, 0.3, 1.0))
    selected = (y == 1) if error == "fnmr" else (y == 0)
    q = np.minimum(qa, qb)[selected]
    for curve in result.curves.values():
        xs, ys, counts = ref_fixed_edc(s[selected], q, curve.threshold, error)
        np.testing.assert_array_equal(curve.discard_fractions, xs)
        np.testing.assert_allclose(curve.error_fractions, ys, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(curve.error_counts, counts)
        np.testing.assert_array_equal(curve.discard_counts, np.round(np.array(xs[:-1]) * len(q)).astype(int))
        for limit in (0.2, 0.3, 1.0):
            assert curve.pauc[limit] == pytest.approx(ref_pauc(xs, ys, limit), rel=1e-12, abs=1e-15)
            e0 = ys[0]
            best = e0**2 / 2 - max(0.0, e0 - limit) ** 2 / 2
            assert curve.pauc_minus_best[limit] == pytest.approx(curve.pauc[limit] - best, abs=1e-15)


def test_fixed_threshold_operating_points():
    rng = np.random.default_rng(3)
    s, y, qa, qb = random_pairs(rng, 500)
    result = edc(s, y, qa, qb, fmr=(1e-3, 0.05), starting_error=0.1, threshold=0.3)
    assert list(result.curves) == ["fmr=0.001", "fmr=0.05", "starting_error=0.1", "threshold=0.3"]
    assert result.curves["fmr=0.05"].threshold == np.quantile(s[y == 0], 1 - 0.05)
    assert result.curves["starting_error=0.1"].threshold == np.quantile(s[y == 1], 0.1)
    assert result.curves["threshold=0.3"].threshold == 0.3
    assert result.curves["threshold=0.3"].starting_error == np.mean(s[y == 1] < 0.3)
    default = edc(s, y, qa, qb)
    assert list(default.curves) == ["fmr=0.001", "fmr=0.0001"]


def test_distance_scores_equal_negated_similarities():
    rng = np.random.default_rng(4)
    s, y, qa, qb = random_pairs(rng, 300)
    sim = edc(s, y, qa, qb, starting_error=0.1, threshold=0.25)
    dist = edc(-s, y, qa, qb, starting_error=0.1, threshold=-0.25, score_kind="distance")
    for a, b in zip(sim.curves.values(), dist.curves.values(), strict=True):
        np.testing.assert_array_equal(a.error_fractions, b.error_fractions)
        assert b.threshold == -a.threshold


@pytest.mark.parametrize("seed", [0, 1])
def test_crfiqa_matches_loop_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    s, y, qa, qb = random_pairs(rng, 240)
    d = np.arccos(np.clip(s, -1, 1)) / math.pi
    q = np.minimum(qa, qb)
    result = edc(s, y, q, convention="crfiqa", fmr=(0.05, 1e-2, 1e-3))
    for target in (0.05, 1e-2, 1e-3):
        np.testing.assert_allclose(
            result.curves[f"fmr={target:g}"].error_fractions, ref_crfiqa(d, y == 1, q, target), rtol=1e-15, atol=0
        )


def test_magface_matches_loop_reference():
    rng = np.random.default_rng(5)
    s, y, qa, qb = random_pairs(rng, 2600, tie_decimals=2, mated_fraction=0.3)
    d = np.arccos(np.clip(s, -1, 1)) / math.pi
    q = np.minimum(qa, qb)
    result = edc(s, y, q, convention="magface", fmr=(1e-2, 1e-3))
    np.testing.assert_allclose(result.curves["fmr=0.01"].error_fractions, ref_magface(d, y == 1, q, 2), atol=0)
    expected = ref_magface(d, y == 1, q, 3)
    assert np.isnan(expected[-1])  # fewer than 101 impostors kept at 95 %: the reference records nothing
    np.testing.assert_allclose(result.curves["fmr=0.001"].error_fractions, expected, atol=0)
    assert np.isnan(result.curves["fmr=0.001"].auc)


def test_kept_counter_matches_brute_force():
    rng = np.random.default_rng(6)
    for n in (1, 7, 300, 5000):
        rank = rng.permutation(n)
        limits = np.array(sorted(rng.integers(0, n + 1, 9)))
        counter = _KeptCounter.from_ranks(rank, limits)
        levels = rng.integers(0, limits.size, 50)
        m = rng.integers(0, n + 1, 50)
        kept = rank[None, :] < limits[levels][:, None]
        expected = np.array([kept[i, : m[i]].sum() for i in range(50)])
        np.testing.assert_array_equal(counter.count(m, levels), expected)
        k = rng.integers(0, n + 2, 50)
        chosen = counter.select(k, levels)
        for i in range(50):
            hits = np.flatnonzero(kept[i])
            assert chosen[i] == (hits[k[i] - 1] if 1 <= k[i] <= hits.size else -1)


# ------------------------------------------------------------------------------------------ identities and bounds


@pytest.mark.parametrize("convention", ["fixed_threshold", "crfiqa", "magface"])
def test_higher_is_better_false_equals_negated_quality(convention):
    rng = np.random.default_rng(7)
    s, y, qa, qb = random_pairs(rng, 1500)
    fmr = (1e-2, 1e-3)
    unc = edc(s, y, qa, qb, convention=convention, higher_is_better=False, fmr=fmr)
    neg = edc(s, y, -qa, -qb, convention=convention, fmr=fmr)
    assert unc.pair_quality == "max"
    assert neg.pair_quality == "min"
    for a, b in zip(unc.curves.values(), neg.curves.values(), strict=True):
        np.testing.assert_array_equal(a.discard_fractions, b.discard_fractions)
        np.testing.assert_array_equal(a.error_fractions, b.error_fractions)
    pair = edc(s, y, np.maximum(qa, qb), convention=convention, higher_is_better=False, fmr=fmr)
    for a, b in zip(pair.curves.values(), neg.curves.values(), strict=True):
        np.testing.assert_array_equal(a.error_fractions, b.error_fractions)


def test_pair_quality_functions():
    qa, qb = np.array([0.2, 0.9, 0.5]), np.array([0.4, 0.1, 0.5])
    np.testing.assert_array_equal(pair_quality(qa, qb), [0.2, 0.1, 0.5])
    np.testing.assert_array_equal(pair_quality(qa, qb, "max"), [0.4, 0.9, 0.5])
    np.testing.assert_allclose(pair_quality(qa, qb, "mean"), [0.3, 0.5, 0.5])
    np.testing.assert_allclose(pair_quality(qa, qb, "product"), [0.08, 0.09, 0.25])
    np.testing.assert_array_equal(pair_quality(qa, qb, lambda a, b: a - b), qa - qb)
    s, y = np.array([0.1, 0.5, 0.7]), np.array([1, 1, 1])
    stacked = edc(s, y, np.stack([qa, qb], axis=1), threshold=0.4)
    separate = edc(s, y, qa, qb, threshold=0.4)
    np.testing.assert_array_equal(
        stacked.curves["threshold=0.4"].error_fractions, separate.curves["threshold=0.4"].error_fractions
    )


def test_oracle_is_analytic_and_orders_below_actual_and_random():
    rng = np.random.default_rng(8)
    n = 2000
    y = (np.arange(n) % 2 == 0).astype(int)
    q = rng.random(n)
    s = np.where(y == 1, 0.3 + 0.4 * q + 0.15 * rng.standard_normal(n), 0.2 * rng.standard_normal(n))
    kwargs = {"starting_error": 0.1, "discard_limits": (0.2, 0.3)}
    actual = edc(s, y, q, **kwargs).curves["starting_error=0.1"]
    oracle = edc_oracle(s, y, **kwargs).curves["starting_error=0.1"]
    random = edc_random(s, y, **kwargs).curves["starting_error=0.1"]
    m = actual.comparison_count
    e = int(actual.error_counts[0])
    k = np.arange(m)
    np.testing.assert_allclose(oracle.discard_fractions, np.append(k / m, 1.0))
    np.testing.assert_allclose(oracle.error_fractions, np.append(np.maximum(e - k, 0) / (m - k), 0.0), rtol=1e-15)
    assert oracle.threshold == actual.threshold
    np.testing.assert_array_equal(random.discard_fractions, [0.0, 1.0])
    np.testing.assert_array_equal(random.error_fractions, [actual.starting_error, 0.0])
    for limit in (0.2, 0.3):
        assert random.pauc[limit] == pytest.approx(actual.starting_error * limit)
        assert oracle.pauc[limit] <= actual.pauc[limit] <= random.pauc[limit]
    # the analytic random curve is the mean over random orders
    curves = [edc(s, y, rng.random(n), **kwargs).curves["starting_error=0.1"] for _ in range(40)]
    at_03 = np.mean([step_value(c.discard_fractions, c.error_fractions, 0.3) for c in curves])
    assert at_03 == pytest.approx(actual.starting_error, abs=0.01)


@pytest.mark.parametrize("convention", ["crfiqa", "magface"])
def test_recomputed_reference_curves(convention):
    rng = np.random.default_rng(9)
    n = 4000
    y = (np.arange(n) % 4 == 0).astype(int)
    q = rng.random(n)
    s = np.where(y == 1, 0.3 + 0.4 * q + 0.15 * rng.standard_normal(n), 0.15 * rng.standard_normal(n))
    actual = edc(s, y, q, convention=convention, fmr=1e-2).curves["fmr=0.01"]
    oracle = edc_oracle(s, y, convention=convention, fmr=1e-2).curves["fmr=0.01"]
    random = edc_random(s, y, convention=convention, fmr=1e-2, n_permutations=3, seed=1, progress=False)
    assert oracle.error_fractions[0] == actual.error_fractions[0] == random.curves["fmr=0.01"].error_fractions[0]
    assert oracle.pauc[0.3] <= actual.pauc[0.3] <= random.curves["fmr=0.01"].pauc[0.3]
    # the random curve is the mean over the seeded permutations
    gen = np.random.default_rng(1)
    runs = [edc(s, y, gen.permutation(n).astype(float), convention=convention, fmr=1e-2) for _ in range(3)]
    expected = np.mean([r.curves["fmr=0.01"].error_fractions for r in runs], axis=0)
    np.testing.assert_allclose(random.curves["fmr=0.01"].error_fractions, expected, rtol=1e-15)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_pauc_within_bounds(seed):
    rng = np.random.default_rng(seed)
    s, y, qa, qb = random_pairs(rng, 600)
    result = edc(s, y, qa, qb, starting_error=(0.05, 0.3), discard_limits=(0.0, 0.1, 0.2, 0.3, 1.0))
    for curve in result.curves.values():
        top = curve.error_fractions.max()
        for limit, value in curve.pauc.items():
            assert curve.area_best[limit] - 1e-15 <= value <= limit * top + 1e-15
            assert value == pytest.approx(curve.partial_auc(limit))
        assert curve.pauc[0.0] == 0.0


def test_pauc_helpers():
    x, y = np.array([0.0, 0.25, 0.5, 1.0]), np.array([0.4, 0.2, 0.1, 0.0])
    assert edc_pauc(x, y, 0.3) == pytest.approx(0.4 * 0.25 + 0.2 * 0.05)
    assert edc_pauc(x, y, 1.0) == pytest.approx(0.4 * 0.25 + 0.2 * 0.25 + 0.1 * 0.5)
    assert area_under_theoretical_best(0.05, 0.2) == pytest.approx(0.00125)
    assert area_under_theoretical_best(0.3, 0.2) == pytest.approx(0.3**2 / 2 - 0.1**2 / 2)
    np.testing.assert_array_equal(erc_discard_grid(), np.arange(0, 0.98, 0.05))


def test_normalize_quality_as_dasec_example():
    q = np.array([2.0, 3.0, 2.5, 4.0, 2.005, 3.99])
    expected = [round(100 * ((v - 2.0) / 2.0)) for v in q]  # example.py: Python round, half to even
    np.testing.assert_array_equal(normalize_quality(q), expected)
    np.testing.assert_array_equal(normalize_quality(q, bins=4), [round(4 * ((v - 2.0) / 2.0)) for v in q])
    with pytest.raises(ValueError, match=r"two different values"):
        normalize_quality(np.ones(3))


def test_protocol_is_stated():
    q1, q2, s, y = synthetic_quality_set()
    assert "threshold fixed for the whole curve" in edc(s, y, q1, q2).protocol
    assert "re-estimated at every discard level" in edc(s, y, q1, q2, convention="crfiqa").protocol
    assert "idx = (n_imp - 1) // 10^k" in edc(s, y, q1, q2, convention="magface", fmr=1e-3).protocol


def test_result_export(tmp_path):
    q1, q2, s, y = synthetic_quality_set()
    result = edc_fixed_threshold(s, y, q1, q2, starting_error=0.05, method="synthetic")
    plain = result.to_dict()
    curve = plain["curves"]["starting_error=0.05"]
    assert "error_counts" not in curve
    assert len(curve["discard_fractions"]) == 601
    assert curve["pauc"]["0.2"] == result.curves["starting_error=0.05"].pauc[0.2]
    json.loads(result.to_json(tmp_path / "r.json").read_text())
    rows = result.rows()
    assert len(rows) == 601
    assert rows[0]["method"] == "synthetic"
    assert rows[0]["error_fraction"] == 0.05
    assert result.to_csv(tmp_path / "r.csv").read_text().count("\n") == 602
    assert result.summary()["starting_error=0.05/pauc@0.2"] == result.curves["starting_error=0.05"].pauc[0.2]
    erc = edc(s, y, q1, q2, convention="crfiqa")
    assert len(erc.rows()) == 40
    assert erc.to_dict()["curves"]["fmr=0.001"]["auc"] == erc.curves["fmr=0.001"].auc


# ------------------------------------------------------------------------------------------ bad input


def test_bad_input_raises_clear_errors():
    s, y, q = np.array([0.1, 0.5, 0.7, 0.2]), np.array([1, 1, 0, 0]), np.array([0.3, 0.2, 0.9, 0.4])
    with pytest.raises(ValueError, match=r"quality: 1 non-finite value.*index 2"):
        edc(s, y, np.array([0.3, 0.2, np.nan, 0.4]))
    with pytest.raises(ValueError, match=r"scores: 1 non-finite"):
        edc(np.array([0.1, np.inf, 0.7, 0.2]), y, q)
    with pytest.raises(ValueError, match=r"labels has 3 values but scores has 4"):
        edc(s, y[:3], q)
    with pytest.raises(ValueError, match=r"quality has 3 values but scores has 4"):
        edc(s, y, q[:3])
    with pytest.raises(ValueError, match=r"no mated pairs"):
        edc(s, np.zeros(4), q)
    with pytest.raises(ValueError, match=r"no non-mated pairs"):
        edc(s, np.ones(4), q)
    with pytest.raises(ValueError, match=r"needs mated \(1\) and non-mated"):
        edc(s, np.ones(4), q, convention="crfiqa")
    with pytest.raises(ValueError, match=r"labels: must be 0 .* index 1 holds 2"):
        edc(s, np.array([1, 2, 0, 0]), q)
    for bad in (0.0, 1.0, -1e-3, 1.5):
        with pytest.raises(ValueError, match=rf"fmr: {bad} is outside"):
            edc(s, y, q, fmr=bad)
    with pytest.raises(ValueError, match=r"starting_error: 1.2 is outside"):
        edc(s, y, q, starting_error=1.2)
    with pytest.raises(ValueError, match=r"discard_limits: 1.5 is outside"):
        edc(s, y, q, discard_limits=1.5)
    with pytest.raises(ValueError, match=r"convention: unknown 'iso'"):
        edc(s, y, q, convention="iso")
    with pytest.raises(ValueError, match=r"MagFace rule only knows"):
        edc(s, y, q, convention="magface", fmr=2e-3)
    with pytest.raises(ValueError, match=r"starting_error/threshold do not apply"):
        edc(s, y, q, convention="crfiqa", starting_error=0.1)
    with pytest.raises(ValueError, match=r"pair_quality: unknown function 'median'"):
        edc(s, y, q, q, pair_quality="median")
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        edc(s, y, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"score_kind: unknown"):
        edc(s, y, q, score_kind="angle")
    with pytest.raises(ValueError, match=r"operating points: duplicates"):
        edc(s, y, q, fmr=(0.1, 0.1))
