"""``POST /verify`` follows the CLI's rule: a threshold learned in training decides only with
``"threshold": "learned"``; a model without one refuses that with a 400 naming the field."""

from __future__ import annotations

import base64
import json
from typing import Any

from _helpers.asgi import Answer, call
from _helpers.tiny_backbone import TinyCNN
from qualiface.models import FaceModel, ThresholdInfo
from qualiface.serve import FaceService, ServeSettings, create_app
from qualiface.serve.schemas import ErrorAnswer, VerifyAnswer


def _learned_app() -> Any:
    model = FaceModel.from_backbone(TinyCNN(embedding_dim=8, input_size=16).eval(), name="tiny-unitsface")
    model.card = model.card.with_threshold(ThresholdInfo(0.5, "learned", source="unitsface head"))
    return create_app(FaceService(model, max_pixels=1_000_000), ServeSettings())


def _verify(app: Any, crop: bytes, **extra: Any) -> Answer:
    body = json.dumps({"a": base64.b64encode(crop).decode(), "b": base64.b64encode(crop).decode(), **extra}).encode()
    return call(app, "POST", "/verify", query="aligned=1", headers=[("content-length", str(len(body)))], chunks=[body])


def test_the_learned_threshold_decides_only_when_asked(crop: bytes) -> None:
    app = _learned_app()
    plain = VerifyAnswer.model_validate(_verify(app, crop).json())
    assert (plain.decision, plain.verified, plain.threshold, plain.threshold_source) == (
        "undecided",
        None,
        None,
        None,
    )
    asked = VerifyAnswer.model_validate(_verify(app, crop, threshold="learned").json())
    assert (asked.decision, asked.threshold, asked.threshold_source) == ("match", 0.5, "learned")  # the same crop
    assert any("not measured" in w for w in asked.warnings)
    health = call(app, "GET", "/health").json()
    assert health["threshold"] is None  # what decides by default
    assert [t["kind"] for t in health["card"]["thresholds"]] == ["learned"]


def test_learned_without_a_learned_threshold_or_another_word_is_a_400(service: FaceService, crop: bytes) -> None:
    app = create_app(service, ServeSettings())  # the tiny model without a learned threshold
    for value, expected in (
        ("learned", "field 'threshold' learned: model 'tiny' has no learned threshold"),
        ("banana", "field 'threshold'"),
        (True, "field 'threshold'"),
    ):
        answer = _verify(app, crop, threshold=value)
        assert answer.status == 400, answer.body
        assert ErrorAnswer.model_validate(answer.json()).error.startswith(expected)
