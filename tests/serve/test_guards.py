"""Who may use the server: the API key (Bearer or X-API-Key, /health open), the Host check of a loopback server,
and the warning when binding beyond this machine."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from _helpers.asgi import Answer, call
from qualiface.serve import FaceService, ServeSettings, create_app
from qualiface.serve.guards import default_allowed_hosts, host_name, is_loopback
from qualiface.serve.server import exposure_warning

KEY = "s3cret-key_123"


@pytest.fixture
def app(service: FaceService) -> FastAPI:
    return create_app(service, ServeSettings(api_key=KEY))


def _embed(app: Any, crop: bytes, *headers: tuple[str, str]) -> Answer:
    sent = [*headers, ("content-length", str(len(crop)))]
    return call(app, "POST", "/embed", query="aligned=1", headers=sent, chunks=[crop])


def test_a_request_without_the_key_is_401_before_its_body_is_read(app, crop: bytes) -> None:
    answer = _embed(app, crop)
    assert answer.status == 401
    assert answer.json()["error"].startswith("missing API key")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.chunks_read == 0
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize(
    "header",
    [("authorization", "Bearer wrong"), ("x-api-key", KEY[:-1]), ("authorization", f"Basic {KEY}"), ("x-api-key", "")],
)
def test_a_wrong_key_is_401(app, crop: bytes, header: tuple[str, str]) -> None:
    answer = _embed(app, crop, header)
    assert answer.status == 401
    assert "API key" in answer.json()["error"]


@pytest.mark.parametrize("header", [("authorization", f"Bearer {KEY}"), ("x-api-key", KEY)])
def test_the_key_is_accepted_as_bearer_or_x_api_key(app, crop: bytes, header: tuple[str, str]) -> None:
    answer = _embed(app, crop, header)
    assert answer.status == 200, answer.body


def test_every_inference_endpoint_needs_the_key_but_health_does_not(app) -> None:
    for path in ("/embed", "/quality", "/verify"):
        assert call(app, "POST", path).status == 401, path
    assert call(app, "GET", "/health").status == 200
    assert call(app, "GET", "/openapi.json").status == 200


def test_without_a_key_the_server_is_open(service: FaceService, crop: bytes) -> None:
    assert _embed(create_app(service), crop).status == 200


@pytest.mark.parametrize("key", ["", "has space", "naïve"])
def test_an_unusable_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="api_key"):
        ServeSettings(api_key=key)


def test_a_loopback_server_answers_only_its_own_host_names(service: FaceService) -> None:
    app = create_app(service, ServeSettings(allowed_hosts=default_allowed_hosts("127.0.0.1")))
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"):
        assert call(app, "GET", "/health", headers=[("host", host)]).status == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
        answer = call(app, "GET", "/health", headers=[("host", host)])
        assert answer.status == 400, host
        assert "is not served here" in answer.json()["error"]


def test_a_public_server_answers_any_host_unless_told() -> None:
    assert default_allowed_hosts("0.0.0.0") is None
    assert default_allowed_hosts("192.168.1.5") is None
    assert "127.0.0.2" in (default_allowed_hosts("127.0.0.2") or ())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_host_names_without_ports() -> None:
    assert [host_name(h) for h in ("a.b:80", "[::1]:8000", "::1", "Example.ORG")] == [
        "a.b",
        "::1",
        "::1",
        "example.org",
    ]


def test_binding_beyond_loopback_warns_and_more_so_without_a_key() -> None:
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    open_warning = exposure_warning("0.0.0.0", None)
    assert open_warning is not None
    assert open_warning.startswith("WARNING: serving on 0.0.0.0 without an API key")
    keyed = exposure_warning("0.0.0.0", KEY)
    assert keyed is not None
    assert keyed.startswith("warning: serving on 0.0.0.0, reachable from other machines")
    assert KEY not in keyed
