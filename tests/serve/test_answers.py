"""Every answer is valid JSON of the documented shape: the endpoints on a tiny real model, the error form for
unknown paths, wrong methods, bad fields, non-finite thresholds, decompression bombs and non-finite results."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from _helpers.asgi import Answer, call
from _helpers.hostile import png_claiming
from qualiface.serve import FaceService, ServeSettings, create_app
from qualiface.serve.schemas import EmbedAnswer, ErrorAnswer, HealthAnswer, QualityAnswer, VerifyAnswer


@pytest.fixture
def app(service: FaceService) -> FastAPI:
    return create_app(service, ServeSettings())


def _post(app: Any, path: str, body: bytes, query: str = "") -> Answer:
    return call(app, "POST", path, query=query, headers=[("content-length", str(len(body)))], chunks=[body])


def _error(answer: Answer, status: int) -> str:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    return ErrorAnswer.model_validate(answer.json()).error


def _pair(crop: bytes, **extra: Any) -> bytes:
    payload = {"a": base64.b64encode(crop).decode(), "b": base64.b64encode(crop).decode(), **extra}
    return json.dumps(payload).encode()


def test_the_answers_have_the_documented_shapes(app, crop: bytes) -> None:
    health = HealthAnswer.model_validate(call(app, "GET", "/health").json())
    assert (health.model, health.embedding_dim, health.quality_method) == ("tiny", 8, "cr_fiqa")
    embedded = EmbedAnswer.model_validate(_post(app, "/embed", crop, "aligned=1").json())
    assert len(embedded.faces) == 1
    assert embedded.faces[0].embedding is not None
    assert len(embedded.faces[0].embedding) == 8
    assert embedded.faces[0].box is None  # an aligned crop has no detection
    quality = QualityAnswer.model_validate(_post(app, "/quality", crop, "aligned=1").json())
    assert quality.method == "cr_fiqa"
    raw = _post(app, "/verify", _pair(crop, threshold=0.5), "aligned=1").json()
    verified = VerifyAnswer.model_validate(raw)
    assert verified.similarity == pytest.approx(1.0, abs=1e-5)
    assert (verified.threshold, verified.threshold_source, verified.match) == (0.5, "argument", True)
    # the decision as `qualiface verify --json` gives it (docs/decisions.md): none of its keys dropped by the schema
    assert (verified.decision, verified.verified) == ("match", True)
    assert verified.distance == pytest.approx(1.0 - verified.similarity)
    assert set(verified.quality) >= {"method", "floor", "a", "b"}
    assert verified.faces["a"]["box"] is None  # aligned crops: no detection
    assert verified.detector is None
    assert set(raw) == set(VerifyAnswer.model_fields)
    for key in ("decision", "verified", "confidence", "reasons", "quality", "faces", "detector", "policy"):
        assert key in raw


def test_the_openapi_schema_describes_the_endpoints(app) -> None:
    schema = call(app, "GET", "/openapi.json").json()
    assert set(schema["paths"]) == {"/health", "/embed", "/quality", "/verify"}
    verify = schema["paths"]["/verify"]["post"]
    assert set(verify["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"a", "b", "threshold"}
    assert {"400", "413", "422", "503"} <= set(verify["responses"])
    assert "application/octet-stream" in schema["paths"]["/embed"]["post"]["requestBody"]["content"]


def test_an_unknown_path_is_a_json_404(app) -> None:
    assert "unknown path /nowhere" in _error(call(app, "GET", "/nowhere"), 404)
    assert "unknown path /nowhere" in _error(_post(app, "/nowhere", b"x"), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"), [("GET", "/embed", "POST"), ("PUT", "/verify", "POST"), ("DELETE", "/health", "GET")]
)
def test_a_wrong_method_is_a_json_405(app, method: str, path: str, allowed: str) -> None:
    answer = call(app, method, path)
    assert f"method {method} not allowed on {path}" in _error(answer, 405)
    assert answer.headers["allow"] == allowed


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_non_finite_threshold_is_400_naming_the_field(app, crop: bytes, constant: str) -> None:
    body = _pair(crop)[:-1] + f', "threshold": {constant}}}'.encode()
    message = _error(_post(app, "/verify", body, "aligned=1"), 400)  # _error parses the answer as strict JSON
    assert message.startswith("field 'threshold'")
    assert "finite" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": "%%%", "b": ""}', "field 'a': not valid base64"),
        (b'{"a": 1, "b": "AA=="}', "field 'a': Input should be a valid string"),
        (b'{"b": "AA=="}', "field 'a': Field required"),
        (b'{"a": "", "b": "", "threshold": 5}', "within [-1, 1]"),
        (b'{"a": "", "b": "", "threshold": true}', "field 'threshold'"),
        (b'{"a": "", "b": "", "threshold": "0.5"}', "field 'threshold'"),
        (b"[1, 2]", "body: "),
        (b"{", "body is not JSON"),
        (b"[" * 100_000, "body is not JSON"),
    ],
)
def test_a_bad_verify_body_is_400_naming_what_is_wrong(app, body: bytes, expected: str) -> None:
    assert expected in _error(_post(app, "/verify", body), 400)


def test_a_bad_query_flag_is_400(app, crop: bytes) -> None:
    assert "aligned" in _error(_post(app, "/embed", crop, "aligned=maybe"), 400)


def test_a_decompression_bomb_is_400_naming_the_limit_before_decoding(app) -> None:
    message = _error(_post(app, "/embed", png_claiming(20000, 20000)), 400)
    assert message.startswith("image: ")
    assert "400,000,000 pixels is over the limit of 1,000,000" in message


def test_not_an_image_and_no_face_are_refused(app, crop: bytes) -> None:
    assert _error(_post(app, "/embed", b"this is not an image"), 400).startswith("image: ")
    assert "empty body" in _error(_post(app, "/embed", b""), 400)
    assert "aligned input must be 112x112" in _error(
        _post(app, "/embed", _png_of(np.zeros((50, 50, 3))), "aligned=1"), 400
    )


def _png_of(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


class _NaNService:
    """A service whose model answers NaN (a broken model): the server must not send invalid JSON."""

    def embed(self, data: bytes, **flags: Any) -> dict[str, Any]:
        return {"faces": [{"face_index": 0, "embedding": [float("nan")]}]}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "threshold": float("-inf")}


def test_a_non_finite_result_is_a_500_in_valid_json_never_echoed() -> None:
    app = create_app(_NaNService())  # type: ignore[arg-type]
    assert "non-finite" in _error(_post(app, "/embed", b"x"), 500)
    assert "non-finite" in _error(call(app, "GET", "/health"), 500)


class _FailingService:
    def embed(self, data: bytes, **flags: Any) -> dict[str, Any]:
        raise RuntimeError("boom\nforged line")


def test_a_server_fault_is_a_json_500_and_one_escaped_log_line(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(_FailingService())  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="qualiface.serve"):
        assert _error(_post(app, "/embed", b"x"), 500) == "internal error (RuntimeError); see the server log"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["/embed failed: RuntimeError: boom\\x0aforged line"]
