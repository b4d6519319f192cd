"""The body limit holds whatever ``Content-Length`` says: the application reads at most the limit (chunks counted),
refuses a bad ``Content-Length`` before reading, and drops a body that comes too slowly (408)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from _helpers.asgi import call
from qualiface.serve import FaceService, ServeSettings, create_app

CHUNK = 64 * 1024
LIMIT = 256 * 1024


def _big_body(chunks: int = 1000) -> list[bytes]:
    """64 MB in 64 KiB chunks: read in full it would be 250 times the limit."""
    return [b"\0" * CHUNK] * chunks


@pytest.fixture
def app(service: FaceService) -> FastAPI:
    return create_app(service, ServeSettings(max_bytes=LIMIT, body_timeout=5))


@pytest.mark.parametrize("length", ["-1", "+10", "abc", "1e3", " ", "0x10", "１２"])
def test_a_content_length_that_is_not_a_decimal_number_is_400_before_reading(app, length: str) -> None:
    answer = call(app, "POST", "/embed", headers=[("content-length", length)], chunks=_big_body())
    assert answer.status == 400, answer.body
    assert "invalid Content-Length" in answer.json()["error"]
    assert answer.chunks_read == 0
    assert answer.headers["connection"] == "close"


def test_two_content_lengths_are_400(app) -> None:
    answer = call(app, "POST", "/embed", headers=[("content-length", "10"), ("content-length", "10")])
    assert answer.status == 400
    assert "invalid Content-Length" in answer.json()["error"]


def test_a_declared_length_over_the_limit_is_413_before_reading(app) -> None:
    answer = call(app, "POST", "/embed", headers=[("content-length", str(400 * 2**20))], chunks=_big_body())
    assert answer.status == 413
    assert answer.json()["error"] == f"body of {400 * 2**20:,} bytes is over the limit of {LIMIT:,}"
    assert answer.chunks_read == 0
    assert answer.headers["connection"] == "close"


def test_a_body_without_content_length_stops_at_the_limit(app) -> None:
    answer = call(app, "POST", "/embed", headers=[("transfer-encoding", "chunked")], chunks=_big_body())
    assert answer.status == 413
    assert "over the limit" in answer.json()["error"]
    assert answer.chunks_read == LIMIT // CHUNK + 1  # the chunk that crossed the limit, not one more
    assert answer.headers["connection"] == "close"


def test_a_body_longer_than_its_content_length_stops_at_once(app) -> None:
    answer = call(app, "POST", "/embed", headers=[("content-length", "100")], chunks=_big_body())
    assert answer.status == 400
    assert "longer than its Content-Length" in answer.json()["error"]
    assert answer.chunks_read == 1


def test_a_lying_small_content_length_cannot_pass_the_limit(app) -> None:
    """Declaring the limit and sending more is cut at the limit, not at what was declared plus anything."""
    answer = call(app, "POST", "/embed", headers=[("content-length", str(LIMIT))], chunks=_big_body())
    assert answer.status in (400, 413)
    assert answer.chunks_read <= LIMIT // CHUNK + 1


def test_a_body_shorter_than_its_content_length_is_400(app, crop: bytes) -> None:
    answer = call(app, "POST", "/embed", query="aligned=1", headers=[("content-length", "99999")], chunks=[crop])
    assert answer.status == 400
    assert f"body of {len(crop)} bytes, its Content-Length says 99999" in answer.json()["error"]


def test_a_body_within_the_limit_is_answered(app, crop: bytes) -> None:
    answer = call(app, "POST", "/embed", query="aligned=1", headers=[("content-length", str(len(crop)))], chunks=[crop])
    assert answer.status == 200, answer.body
    assert len(answer.json()["faces"][0]["embedding"]) == 8
    assert "connection" not in answer.headers  # the body was read: the connection may be reused


def test_a_slow_body_is_dropped_with_408(service: FaceService) -> None:
    app = create_app(service, ServeSettings(max_bytes=LIMIT, body_timeout=0.3))
    answer = call(app, "POST", "/embed", chunks=[b"\0" * 10] * 100, delay=0.05)
    assert answer.status == 408
    assert "not received within 0.3 s" in answer.json()["error"]
    assert answer.chunks_read < 10
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize("value", ["-1", "１２", "12 12", "9" * 20])
def test_declared_length_takes_only_ascii_decimal_numbers(value: str) -> None:
    from qualiface.serve.limits import declared_length
    from qualiface.serve.service import RequestError

    with pytest.raises(RequestError, match="invalid Content-Length"):
        declared_length([value])
    assert declared_length([" 12 "]) == 12
    assert declared_length([]) is None
