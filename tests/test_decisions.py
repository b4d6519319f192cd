"""DecisionPolicy: match / non-match / abstain / undecided, the reasons, the confidence and the 0-100 quality."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from qualiface.backbones.base import Preprocessing
from qualiface.decisions import Decision, DecisionPolicy
from qualiface.models.calibration import fit_confidence, fit_quality_scale
from qualiface.models.card import ModelCard, QualityCalibration, QualityInfo, ThresholdInfo


def _model(method: str = "cr_fiqa", **calibration) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    same = rng.random(300) < 0.3
    scores = np.where(same, rng.normal(0.5, 0.15, 300), rng.normal(0.05, 0.1, 300))
    quality = rng.normal(1.0, 0.2, 500) if method != "scaleface" else rng.uniform(10, 40, 500)
    calibrated = QualityCalibration(
        method=method,
        source="branch",
        scale=fit_quality_scale(quality),
        floor=float(np.percentile(quality, 5)),
        floor_percentile=5.0,
        **calibration,
    )
    card = ModelCard(
        name="m",
        source_format="qualiface",
        embedding_dim=8,
        preprocessing=Preprocessing(),
        quality=(QualityInfo(method, "branch"),),
        thresholds=(ThresholdInfo(0.3, "calibrated", fmr=1e-3),),
        confidence=fit_confidence(scores, same),
        quality_calibration=calibrated,
    )
    return SimpleNamespace(card=card, quality_floor=calibrated.floor, quality=quality)


def test_match_and_non_match_follow_the_threshold() -> None:
    model = _model()
    policy = DecisionPolicy.from_model(model)
    good = float(np.median(model.quality))
    match = policy.decide(0.31, qualities=(good, good))
    assert (match.decision, match.verified, match.reasons) == ("match", True, [])
    assert (match.threshold, match.threshold_source) == (0.3, "calibration")
    other = policy.decide(0.29, qualities=(good, good))
    assert (other.decision, other.verified) == ("non-match", False)
    assert policy.decide(0.3).decision == "match"  # similarity >= threshold; no quality known: no floor applies


def test_a_face_below_the_floor_abstains_and_says_which() -> None:
    model = _model()
    policy = DecisionPolicy.from_model(model)
    floor = model.quality_floor
    result = policy.decide(0.9, qualities=(floor + 0.1, floor - 0.01), names=("probe", "gallery photo"))
    assert (result.decision, result.verified) == ("abstain", None)
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("gallery photo: quality")
    assert "below the floor" in result.reasons[0]
    assert "5th percentile" in result.reasons[0]
    assert result.confidence is not None
    assert result.confidence > 0.9
    assert policy.decide(0.9, qualities=(floor, floor)).decision == "match"  # at the floor is not below it
    nan = policy.decide(0.9, qualities=(math.nan, floor))
    assert nan.decision == "abstain"


def test_the_floor_and_threshold_can_be_given() -> None:
    model = _model()
    good = float(np.median(model.quality))
    policy = DecisionPolicy.from_model(model, threshold=0.5, quality_floor=good + 1)
    assert (policy.threshold_source, policy.quality_floor_source) == ("argument", "argument")
    assert policy.decide(0.6, qualities=(good, good)).decision == "abstain"
    assert DecisionPolicy.from_model(model, threshold=0.5).decide(0.45, qualities=(good, good)).decision == "non-match"
    with pytest.raises(ValueError, match="threshold"):
        DecisionPolicy.from_model(model, threshold=1.5)


def test_without_a_threshold_it_is_undecided() -> None:
    model = _model()
    model.card = replace(model.card, thresholds=())
    result = DecisionPolicy.from_model(model).decide(0.9, qualities=(0.0, 0.0))
    assert (result.decision, result.verified, result.threshold) == ("undecided", None, None)
    assert result.reasons[0].startswith("no threshold")
    assert any("below the floor" in r for r in result.reasons)  # the quality problem is said too


def test_scaleface_uncertainty_above_the_bound_abstains() -> None:
    model = _model("scaleface", uncertainty_bound=1 / 12.0, uncertainty_percentile=95.0)
    policy = DecisionPolicy.from_model(model, quality_floor=0.0)  # only the uncertainty decides here
    assert policy.uncertainty(20.0) == pytest.approx(0.05)
    assert policy.uncertainty(0.0) == math.inf
    assert policy.decide(0.5, qualities=(20.0, 30.0)).decision == "match"
    result = policy.decide(0.5, qualities=(20.0, 11.0))  # 1/11 > 1/12
    assert result.decision == "abstain"
    assert result.reasons == [
        "face 2: uncertainty 0.09091 is above the bound 0.08333 (calibration: the 95th percentile of 1/s(x))"
    ]
    given = policy.decide(0.5, qualities=(20.0, 30.0), uncertainties=(0.01, 0.5))
    assert given.decision == "abstain"
    assert DecisionPolicy.from_model(_model()).uncertainty(20.0) is None  # not a ScaleFace model


def test_confidence_is_the_calibrated_curve_and_the_prior_can_change() -> None:
    model = _model()
    policy = DecisionPolicy.from_model(model)
    curve = model.card.confidence
    for s in (-0.2, 0.1, 0.25, 0.4, 0.8):
        assert policy.confidence(s) == pytest.approx(float(np.interp(s, curve.similarity, curve.probability)))
    rare = DecisionPolicy.from_model(model, prior=0.01)
    assert rare.confidence(0.3) < policy.confidence(0.3)
    assert rare.describe()["confidence_prior"] == 0.01
    assert policy.describe()["confidence_prior"] == pytest.approx(curve.genuine_share)
    bare = replace(model.card, confidence=None)
    assert DecisionPolicy.from_model(SimpleNamespace(card=bare)).confidence(0.3) is None


def test_scaled_quality_is_the_calibrated_scale() -> None:
    model = _model()
    policy = DecisionPolicy.from_model(model)
    assert policy.scaled_quality(float(np.median(model.quality))) == pytest.approx(50.0)
    assert policy.scaled_quality(-100.0) == 0.0
    assert policy.scaled_quality(100.0) == 100.0
    assert policy.scaled_quality(None) is None
    bare = SimpleNamespace(card=replace(model.card, quality_calibration=None))
    assert DecisionPolicy.from_model(bare).scaled_quality(1.0) is None


def test_decision_json_reads_like_deepface() -> None:
    decision = Decision("match", True, 0.75, 0.3, "calibration", 0.98)
    record = decision.to_dict()
    assert list(record)[:4] == ["decision", "verified", "similarity", "distance"]
    assert record["distance"] == pytest.approx(0.25)
    assert set(record) == {
        "decision",
        "verified",
        "similarity",
        "distance",
        "threshold",
        "threshold_source",
        "confidence",
        "reasons",
    }


def test_scaleface_calibration_stores_the_uncertainty_bound_and_verify_abstains_on_it(tmp_path) -> None:
    """A ScaleFace model (a tiny CNN + ScaleFace's scale head, random weights, written as a model.pt) calibrated
    through the library: the bound is the 95th percentile of 1/s(x) over the calibration images (1 / the 5th
    percentile of s), it reaches the card, and a face above it abstains."""
    import torch

    import qualiface
    from _helpers.tiny_backbone import registered
    from qualiface.detect.faces import FaceSet
    from qualiface.models import load_model, save_calibration
    from qualiface.use import calibrate, compare

    with registered():
        torch.manual_seed(0)
        kwargs = {"quality_branch": "scaleface", "embedding_dim": 16, "scale_activation": "exp"}
        backbone = qualiface.create_backbone("tiny_cnn", **kwargs)
        path = tmp_path / "model.pt"
        torch.save(
            {
                "format": "qualiface.model/1",
                "backbone": "tiny_cnn",
                "backbone_kwargs": kwargs,
                "embedding_dim": 16,
                "preprocessing": backbone.preprocessing.to_dict(),
                "state_dict": backbone.state_dict(),
                "step": 1,
            },
            path,
        )
        model = load_model(path)
        assert model.quality_method == "scaleface"
        images = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
        index_a, index_b = np.arange(0, 40, 2), np.arange(1, 40, 2)
        result = calibrate(model, images, index_a, index_b, np.arange(20) % 2 == 0, 0.1)
        s = model.quality(images).astype(np.float64)
        assert result.uncertainty_bound == pytest.approx(1.0 / np.percentile(s, 5), rel=1e-5)
        u = np.sort(1.0 / s)  # the 95th percentile of 1/s lies between the same two faces
        assert u[int(np.floor(0.95 * 39))] <= result.uncertainty_bound <= u[int(np.ceil(0.95 * 39))]
        assert result.quality_floor == pytest.approx(np.percentile(s, 5), rel=1e-5)
        save_calibration(path, result.threshold, fmr=0.1, pairs="random", extra=result.record())
        calibrated = load_model(path)
    assert calibrated.card.quality_calibration.uncertainty_bound == pytest.approx(result.uncertainty_bound)
    assert "1/s(x) above" in calibrated.card.summary()
    worst, best = int(np.argmin(s)), int(np.argmax(s))

    def face(row: int) -> FaceSet:
        return FaceSet(images=images[row : row + 1], sources=[(tmp_path / f"{row}.png", 0)], detections=[None])

    policy = DecisionPolicy.from_model(calibrated, quality_floor=0.0)  # the bound alone decides
    one = compare(calibrated, face(best), face(worst), policy=policy)
    assert one.decision.decision == "abstain"
    assert one.decision.reasons == [
        f"image B ({tmp_path / f'{worst}.png'}): uncertainty {1 / s[worst]:.4g} is above the bound "
        f"{result.uncertainty_bound:.4g} (calibration: the 95th percentile of 1/s(x))"
    ]
    assert one.quality["b"]["uncertainty"] == pytest.approx(1 / s[worst], rel=1e-5)


def test_an_infinite_uncertainty_is_null_in_json_and_abstains(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ScaleFace scale of 0 (an infinite uncertainty) abstains; the comparison's JSON stays valid (null)."""
    import json

    import qualiface.use as use
    from qualiface.detect.faces import FaceSet

    model = _model("scaleface", uncertainty_bound=0.1, uncertainty_percentile=95.0)
    policy = DecisionPolicy.from_model(model, quality_floor=-1.0)
    result = policy.decide(0.9, qualities=(20.0, 0.0))
    assert result.decision == "abstain"
    assert result.reasons == [
        "face 2: uncertainty inf is above the bound 0.1 (calibration: the 95th percentile of 1/s(x))"
    ]
    scales = iter([20.0, 0.0])  # the network's scale s(x) of face a, then of face b

    def embedded(*args, **kwargs):
        return SimpleNamespace(fused=lambda: np.ones((1, 2), np.float32), quality=np.array([next(scales)]))

    monkeypatch.setattr(use, "embed_images", embedded)
    model.embedding_dim, model.quality_method = 2, "scaleface"
    model.quality_info = lambda allow_untrained=False: model.card.quality[0]
    model.card = replace(model.card, thresholds=(ThresholdInfo(0.5, "calibrated", fmr=1e-3),))
    faces = [
        FaceSet(images=np.zeros((1, 4, 4, 3), np.uint8), sources=[(f"{n}.png", 0)], detections=[None]) for n in "ab"
    ]
    compared = use.compare(model, faces[0], faces[1], policy=policy)
    record = json.loads(json.dumps(compared.to_dict(), allow_nan=False))
    assert record["decision"] == "abstain"
    assert record["quality"]["b"] == {"raw": 0.0, "scaled": 0.0, "uncertainty": None}
    assert record["quality"]["a"]["uncertainty"] == pytest.approx(0.05)
