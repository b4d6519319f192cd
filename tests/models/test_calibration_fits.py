"""The calibrated confidence (isotonic fit) and the 0-100 quality scale against references written from their
definitions, their storage in the calibration file and the card, and old calibration files."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from _helpers.shared_data import SFACE, need
from qualiface.backbones.base import Preprocessing
from qualiface.models import ModelCard, load_model, save_calibration
from qualiface.models.calibration import fit_confidence, fit_quality_scale, pool_adjacent_violators
from qualiface.models.card import CardError, ConfidenceCurve, QualityCalibration, QualityScale
from qualiface.models.formats.common import ModelLoadError

# ------------------------------------------------------------------------------------------------ references


def _isotonic_minmax(values: list[Fraction], weights: list[Fraction]) -> list[Fraction]:
    """The weighted isotonic regression by its min-max formula (no pooling algorithm):
    ``f_i = max_{j <= i} min_{k >= i} (sum_{j..k} w v) / (sum_{j..k} w)``, in exact rationals."""
    n = len(values)
    num, den = [Fraction(0)], [Fraction(0)]  # prefix sums
    for v, w in zip(values, weights, strict=True):
        num.append(num[-1] + v * w)
        den.append(den[-1] + w)
    out = []
    for i in range(n):
        out.append(max(min((num[k + 1] - num[j]) / (den[k + 1] - den[j]) for k in range(i, n)) for j in range(i + 1)))
    return out


def _level_sets(fitted: list[Fraction]) -> list[list[int]]:
    sets: list[list[int]] = []
    for i, value in enumerate(fitted):
        if sets and fitted[sets[-1][0]] == value:
            sets[-1].append(i)
        else:
            sets.append([i])
    return sets


def _reference_curve(similarity: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The knots of the documented fit, from its definition: distinct similarities with their pair and genuine
    counts; isotonic regression of the genuine rate weighted by the counts; each level set's rate Laplace-smoothed
    (g + 1) / (n + 2); isotonic regression of those weighted by n + 2; each final level set gives knots at its
    lowest and highest similarity."""
    xs = sorted(set(similarity.tolist()))
    n = [Fraction(int(np.sum(similarity == x))) for x in xs]
    g = [Fraction(int(np.sum(issame[similarity == x]))) for x in xs]
    first = _level_sets(_isotonic_minmax([gi / ni for gi, ni in zip(g, n, strict=True)], n))
    bn = [sum(n[i] for i in s) for s in first]
    bg = [sum(g[i] for i in s) for s in first]
    low = [Fraction(xs[s[0]]) for s in first]
    high = [Fraction(xs[s[-1]]) for s in first]
    smoothed = [(gi + 1) / (ni + 2) for gi, ni in zip(bg, bn, strict=True)]
    second_fit = _isotonic_minmax(smoothed, [ni + 2 for ni in bn])
    knots_x: list[float] = []
    knots_p: list[float] = []
    for s in _level_sets(second_fit):
        lo, hi, p = low[s[0]], high[s[-1]], float(second_fit[s[0]])
        knots_x += [float(lo)] if lo == hi else [float(lo), float(hi)]
        knots_p += [p] if lo == hi else [p, p]
    return np.array(knots_x), np.array(knots_p)


def _pairs(seed: int, n: int = 70) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping genuine / impostor similarities, rounded so that equal values occur."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    scores = np.where(same, rng.normal(0.45, 0.2, n), rng.normal(0.1, 0.15, n))
    return np.clip(np.round(scores, 2), -1, 1), same


# ------------------------------------------------------------------------------------------------ confidence


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_confidence_fit_equals_the_reference_from_its_definition(seed: int) -> None:
    scores, same = _pairs(seed)
    curve = fit_confidence(scores, same)
    knots_x, knots_p = _reference_curve(scores, same)
    np.testing.assert_allclose(curve.similarity, knots_x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.probability, knots_p, rtol=0, atol=1e-12)
    grid = np.linspace(-1, 1, 401)
    np.testing.assert_allclose(curve.probability_at(grid), np.interp(grid, knots_x, knots_p), atol=1e-12)
    assert curve.genuine_share == pytest.approx(same.mean())
    assert (curve.n_genuine, curve.n_impostor) == (int(same.sum()), int((~same).sum()))


def test_pool_adjacent_violators_equals_the_minmax_formula() -> None:
    rng = np.random.default_rng(5)
    values, weights = rng.normal(size=30), rng.integers(1, 5, 30).astype(float)
    starts, means, _ = pool_adjacent_violators(values, weights)
    fitted = np.repeat(means, np.diff(np.append(starts, values.size)))
    reference = _isotonic_minmax([Fraction(v) for v in values], [Fraction(w) for w in weights])
    np.testing.assert_allclose(fitted, [float(r) for r in reference], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confidence_is_monotone_and_never_certain(seed: int) -> None:
    scores, same = _pairs(seed, 400)
    curve = fit_confidence(scores, same)
    p = curve.probability_at(np.linspace(-1.5, 1.5, 1001))
    assert np.all(np.diff(p) >= 0)
    assert np.all((p > 0) & (p < 1))
    # perfectly separated classes: the extreme blocks are smoothed, never 0 or 1
    separated = fit_confidence(np.r_[np.linspace(-0.2, 0.2, 50), np.linspace(0.5, 0.9, 30)], np.r_[[0] * 50, [1] * 30])
    assert separated.probability == pytest.approx((1 / 52, 1 / 52, 31 / 32, 31 / 32))


def test_confidence_under_another_prior_rescales_the_odds() -> None:
    scores, same = _pairs(7, 300)
    curve = fit_confidence(scores, same)
    p0, pi0 = curve.probability_at(0.3), curve.genuine_share
    for prior in (0.01, 0.5, 0.9):
        odds = p0 / (1 - p0) * (prior / (1 - prior)) / (pi0 / (1 - pi0))
        assert curve.probability_at(0.3, prior=prior) == pytest.approx(odds / (1 + odds), rel=1e-12)
    assert curve.probability_at(0.3, prior=pi0) == pytest.approx(p0, rel=1e-12)
    with pytest.raises(CardError, match="prior"):
        curve.probability_at(0.3, prior=1.0)


def test_confidence_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="0 impostor"):
        fit_confidence(np.array([0.1, 0.5]), np.array([True, True]))


def test_confidence_knots_are_capped_and_stay_monotone() -> None:
    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, 5000)
    same = rng.random(5000) < (scores + 1) / 2  # a steady rise: many level sets
    curve = fit_confidence(scores, same, max_knots=16)
    assert len(curve.similarity) <= 16
    assert len(curve.similarity) > 8
    assert np.all(np.diff(curve.probability) >= 0)
    assert np.all(np.diff(curve.similarity) > 0)


# ------------------------------------------------------------------------------------------------ quality scale


def test_quality_scale_is_the_empirical_cdf_in_percent() -> None:
    rng = np.random.default_rng(11)
    quality = rng.gamma(4.0, 2.0, 999)
    scale = fit_quality_scale(quality)
    percent = np.arange(101)
    np.testing.assert_allclose(scale.scaled(np.percentile(quality, percent)), percent, atol=1e-9)
    assert scale.scaled(float(np.median(quality))) == pytest.approx(50.0)
    grid = np.linspace(quality.min() - 5, quality.max() + 5, 2001)
    values = scale.scaled(grid)
    assert np.all(np.diff(values) >= 0)
    assert values.min() == 0.0
    assert values.max() == 100.0
    # against the fraction of calibration images below, up to the knots' resolution (1 point)
    below = np.array([np.mean(quality < q) * 100 for q in grid])
    assert np.max(np.abs(values - below)) < 1.5
    assert scale.n_images == 999


def test_quality_scale_with_ties_and_a_single_value() -> None:
    scale = fit_quality_scale(np.array([1.0] * 10 + [2.0] * 10))
    assert np.all(np.diff(scale.raw) > 0)
    assert scale.scaled(0.5) == 0.0
    assert scale.scaled(2.5) == 100.0
    assert 0 < scale.scaled(1.0) < scale.scaled(2.0) <= 100
    flat = fit_quality_scale(np.full(5, 3.0))
    assert (flat.scaled(2.9), flat.scaled(3.0), flat.scaled(3.1)) == (0.0, 50.0, 100.0)
    with pytest.raises(ValueError, match="no finite"):
        fit_quality_scale(np.array([np.nan]))


# ------------------------------------------------------------------------------------------------ storage


def _calibrated_card() -> ModelCard:
    scores, same = _pairs(0, 200)
    return ModelCard(
        name="m",
        source_format="qualiface",
        embedding_dim=8,
        preprocessing=Preprocessing(),
        confidence=fit_confidence(scores, same),
        quality_calibration=QualityCalibration(
            "scaleface", "branch", fit_quality_scale(np.arange(50.0)), 2.45, 5.0, 0.4, 95.0
        ),
    )


def test_card_with_confidence_and_quality_scale_round_trips() -> None:
    card = _calibrated_card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    summary = again.summary()
    assert "confidence      P(genuine | similarity)" in summary
    assert "quality floor   2.45, the 5th percentile" in summary
    assert "1/s(x) above 0.4" in summary


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"probability": [0.2, 0.1]}, "non-decreasing"),
        ({"probability": [0.0, 0.5]}, r"within \(0, 1\)"),
        ({"similarity": [0.5, 0.5]}, "strictly increasing"),
        ({"genuine_share": 1.0}, "genuine_share"),
        ({"similarity": [0.1, float("nan")]}, "finite"),
    ],
)
def test_invalid_confidence_is_refused(change: dict, message: str) -> None:
    base = {"similarity": [0.1, 0.5], "probability": [0.1, 0.9], "genuine_share": 0.5, "n_genuine": 5, "n_impostor": 5}
    with pytest.raises(CardError, match=message):
        ConfidenceCurve.from_dict({**base, **change})


def test_invalid_quality_scale_is_refused() -> None:
    with pytest.raises(CardError, match="strictly increasing"):
        QualityScale.from_dict({"raw": [2.0, 1.0], "percent": [0.0, 100.0], "n_images": 3})
    with pytest.raises(CardError, match=r"\[0, 100\]"):
        QualityScale.from_dict({"raw": [1.0, 2.0], "percent": [0.0, 101.0], "n_images": 3})


@pytest.fixture
def sface(tmp_path: Path) -> Path:
    need(SFACE)
    model = tmp_path / "sface.onnx"
    model.write_bytes(SFACE.read_bytes())
    return model


def test_an_old_calibration_file_still_loads_without_confidence_or_scale(sface: Path) -> None:
    save_calibration(sface, 0.3, fmr=1e-3, pairs="pairs.csv", extra={"quality_floor": 9.5, "n_genuine": 10})
    model = load_model(sface)
    assert model.threshold == 0.3
    assert model.card.confidence is None
    assert model.card.quality_calibration is not None
    assert model.card.quality_calibration.scale is None
    assert model.card.quality_calibration.floor == 9.5
    summary = model.card.summary()
    assert "confidence      unavailable" in summary
    assert "quality scale   unavailable" in summary


def test_a_calibration_with_confidence_and_scale_reaches_the_card(sface: Path) -> None:
    card = _calibrated_card()
    extra = {
        "confidence": json.loads(json.dumps(card.to_dict()["confidence"])),
        "quality_scale": card.to_dict()["quality_calibration"]["scale"],
        "quality_floor": 2.45,
        "quality_floor_percentile": 5.0,
        "quality_method": "feature_norm",
        "quality_source": "embedding_norm",
    }
    save_calibration(sface, 0.3, fmr=1e-3, pairs="pairs.csv", extra=extra)
    model = load_model(sface)
    assert model.card.confidence == card.confidence
    assert model.card.quality_calibration.scale == card.quality_calibration.scale
    assert model.card.quality_calibration.method == "feature_norm"


def test_a_calibration_file_with_broken_knots_is_refused_by_name(sface: Path) -> None:
    bad = {"similarity": [0.5, 0.1], "probability": [0.1, 0.9], "genuine_share": 0.5, "n_genuine": 1, "n_impostor": 1}
    path = save_calibration(sface, 0.3, fmr=1e-3, pairs="pairs.csv", extra={"confidence": bad})
    with pytest.raises(ModelLoadError, match=f"{path}: confidence similarity: knots must be strictly increasing"):
        load_model(sface)
