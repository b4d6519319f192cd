"""A threshold learned in training (UniTSFace's ``b / γ``) decides only when asked for, and calibration measures
what it gives: FMR and FNMR on the calibration pairs against a float64 NumPy reference, stored in the calibration
file, read back into the card, described by ``info`` (with the small-sample marker for an FMR of 0)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qualiface.backbones.base import Preprocessing
from qualiface.decisions import LEARNED, DecisionPolicy, parse_threshold, resolve_threshold
from qualiface.errors import InputError
from qualiface.eval.roc import rate_measurable
from qualiface.models import ModelCard, ThresholdInfo
from qualiface.models.calibration import (
    ThresholdCheck,
    apply_calibration,
    check_threshold_on_pairs,
    load_calibration,
    save_calibration,
)


def _reference(scores: np.ndarray, same: np.ndarray, t: float) -> tuple[float, float, int, int]:
    """FMR, FNMR and the two error counts written from their definitions, one pair at a time in float64:
    an impostor pair at or above ``t`` is a false match, a genuine pair below ``t`` a false non-match."""
    false_matches = sum(1 for s, g in zip(scores.tolist(), same.tolist(), strict=True) if not g and s >= t)
    false_non_matches = sum(1 for s, g in zip(scores.tolist(), same.tolist(), strict=True) if g and s < t)
    n_impostor = sum(1 for g in same.tolist() if not g)
    n_genuine = sum(1 for g in same.tolist() if g)
    return false_matches / n_impostor, false_non_matches / n_genuine, false_matches, false_non_matches


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rates_at_a_fixed_threshold_match_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = rng.random(500) < 0.3
    scores = np.where(same, rng.normal(0.5, 0.2, 500), rng.normal(0.1, 0.2, 500)).clip(-1, 1)
    t = float(rng.uniform(0.1, 0.5))
    scores[:3] = t  # ties at the threshold: a match (similarity >= threshold)
    check = check_threshold_on_pairs(scores.astype(np.float32), same, t)
    fmr, fnmr, fm, fnm = _reference(scores.astype(np.float32).astype(np.float64), same, t)
    assert (check.fmr, check.fnmr, check.false_matches, check.false_non_matches) == pytest.approx((fmr, fnmr, fm, fnm))
    assert (check.n_impostor, check.n_genuine) == (int((~same).sum()), int(same.sum()))
    assert check.fmr_measurable == (fm > 0)
    assert ThresholdCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check


def test_no_false_match_is_not_a_measured_rate() -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    same = np.array([True, True, False, False, False])
    check = check_threshold_on_pairs(scores, same, 0.5)
    assert (check.fmr, check.fnmr, check.fmr_measurable) == (0.0, 0.0, False)
    assert not rate_measurable(0.0, 3)
    info = ThresholdInfo(0.5, "learned", fmr_measured=0.0, fnmr=0.0, n_genuine=2, n_impostor=3, pairs="p.csv")
    assert info.rates() == "FMR < 1/3 (no false match: too few impostor pairs to measure it), FNMR 0 on p.csv (5 pairs)"
    one = replace(info, fmr_measured=1 / 3, fnmr=0.5)
    assert one.rates() == "FMR 0.333 (1 of 3 impostor pairs), FNMR 0.5 on p.csv (5 pairs)"
    assert ThresholdInfo(0.5, "learned").rates() == "FMR and FNMR not measured: run qualiface calibrate"
    only_impostors = check_threshold_on_pairs(scores[2:], same[2:], 0.25)
    assert (only_impostors.fmr, only_impostors.fnmr, only_impostors.false_matches) == (1 / 3, None, 1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fmr": 1.5}, "learned_threshold.fmr"),
        ({"fnmr": "0.1"}, "learned_threshold.fnmr"),
        ({"n_impostor": -1}, "learned_threshold.n_impostor"),
        ({"false_matches": 1.0}, "learned_threshold.false_matches"),
        ({"threshold": 2.0}, "learned_threshold.threshold"),
    ],
)
def test_a_bad_stored_check_is_refused_naming_the_field(tmp_path: Path, change: dict, field: str) -> None:
    good = check_threshold_on_pairs(np.array([0.9, 0.1]), np.array([True, False]), 0.5).to_dict()
    model = tmp_path / "m.onnx"
    model.write_bytes(b"weights")
    save_calibration(model, 0.4, fmr=0.1, pairs="p.csv", extra={"learned_threshold": {**good, **change}})
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_calibration(model)


def _card(*thresholds: ThresholdInfo) -> ModelCard:
    return ModelCard(
        name="u", source_format="unitsface", embedding_dim=8, preprocessing=Preprocessing(), thresholds=thresholds
    )


class _Model:
    def __init__(self, card: ModelCard) -> None:
        self.card = card


def test_a_learned_threshold_decides_only_when_asked_for() -> None:
    learned = ThresholdInfo(0.3, "learned", source="sample_to_sample_loss.bias / 64")
    card = _card(learned)
    assert card.decision_threshold is None
    assert resolve_threshold(card) == (None, None)
    policy = DecisionPolicy.from_model(_Model(card))
    assert policy.decide(0.9).decision == "undecided"  # b / γ is not used silently
    assert resolve_threshold(card, LEARNED) == (0.3, "learned")
    asked = DecisionPolicy.from_model(_Model(card), threshold="learned")
    assert (asked.decide(0.3).decision, asked.decide(0.29).decision) == ("match", "non-match")
    assert asked.decide(0.3).threshold_source == "learned"
    calibrated = card.with_threshold(ThresholdInfo(0.45, "calibrated", fmr=1e-3))
    assert resolve_threshold(calibrated) == (0.45, "calibration")
    assert resolve_threshold(calibrated, "learned") == (0.3, "learned")
    given = calibrated.with_threshold(ThresholdInfo(0.2, "given", source="set in Python"))
    assert resolve_threshold(given) == (0.2, "given")  # the newest of given and calibrated
    assert resolve_threshold(given, 0.7) == (0.7, "argument")
    with pytest.raises(InputError, match=r"^--threshold learned: model 'u' has no learned threshold"):
        resolve_threshold(_card(), "learned")
    with pytest.raises(InputError, match=r"^--threshold 'banana': expected a cosine in \[-1, 1\] or 'learned'$"):
        parse_threshold("banana")
    assert (parse_threshold("Learned"), parse_threshold("0.25"), parse_threshold(None)) == ("learned", 0.25, None)
    with pytest.raises(InputError, match="within"):
        parse_threshold("1.5")


def test_the_calibration_file_carries_the_check_into_the_card(tmp_path: Path) -> None:
    learned = ThresholdInfo(0.3, "learned", source="sample_to_sample_loss.bias / 64")
    scores = np.array([0.9, 0.25, 0.35, 0.1, 0.5, 0.05])
    same = np.array([True, True, False, False, True, False])
    check = check_threshold_on_pairs(scores, same, 0.3)
    model = tmp_path / "u.tar"
    model.write_bytes(b"weights")
    save_calibration(model, 0.4, fmr=0.1, pairs="cal.csv", extra={"learned_threshold": check.to_dict()})
    card = apply_calibration(_card(learned), load_calibration(model))
    entry = card.learned_threshold
    assert (entry.fmr_measured, entry.fnmr, entry.n_impostor, entry.n_genuine, entry.pairs) == (
        1 / 3,
        1 / 3,
        3,
        3,
        "cal.csv",
    )
    assert card.decision_threshold.kind == "calibrated"
    summary = card.summary()
    assert "learned threshold 0.300: FMR 0.333 (1 of 3 impostor pairs), FNMR 0.333 on cal.csv (6 pairs)" in summary
    assert "(decides only with --threshold learned)" in summary
    assert "not measured" not in summary
    assert ModelCard.from_json(card.to_json()) == card  # the figures travel in the card's JSON
    # a check made for another learned value (cannot happen for the same weights) is not attached
    other = apply_calibration(_card(replace(learned, value=0.31)), load_calibration(model))
    assert other.learned_threshold.fmr_measured is None
    unmeasured = _card(learned).summary()
    assert "learned threshold 0.300: FMR and FNMR not measured: run qualiface calibrate" in unmeasured
    assert "none decides by default" in unmeasured
