"""``qualiface serve``: its options reach the application and uvicorn, binding beyond loopback warns (more
strongly without an API key), the key comes from QUALIFACE_API_KEY, bad limits exit 2 (uvicorn itself is replaced
by a recorder: the server's behaviour is tested in test_uvicorn.py)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import qualiface.serve
from _helpers.shared_data import SFACE, need
from qualiface.cli.app import app

runner = CliRunner()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(qualiface.serve, "run_server", lambda *args: calls.append(args))
    return calls


def test_serve_passes_its_options_and_stays_quiet_on_loopback(started: list[Any]) -> None:
    need(SFACE)
    args = ["serve", "-m", str(SFACE), "--port", "0", "--concurrency", "2", "--queue", "3", "--max-mb", "1"]
    result = runner.invoke(app, [*args, "--keep-alive", "7", "--header-timeout", "4", "--body-timeout", "9"])
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.stderr.upper()
    assert "serving OpenCV Zoo SFace" in result.stdout
    assert "on http://127.0.0.1:" in result.stdout
    [(application, options, sock)] = started
    sock.close()
    settings = application.state.settings
    assert (settings.concurrency, settings.queue, settings.max_bytes, settings.body_timeout) == (2, 3, 2**20, 9)
    assert settings.api_key is None
    assert "localhost" in settings.allowed_hosts
    assert (options.keep_alive, options.header_timeout) == (7, 4)


def test_serve_beyond_loopback_warns_without_a_key(started: list[Any]) -> None:
    need(SFACE)
    result = runner.invoke(app, ["serve", "-m", str(SFACE), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "WARNING: serving on 0.0.0.0 without an API key" in result.stderr
    started[0][2].close()
    assert started[0][0].state.settings.allowed_hosts is None


def test_serve_takes_the_key_from_the_environment_and_never_prints_it(started: list[Any]) -> None:
    need(SFACE)
    key = "k-from-env-42"
    args = ["serve", "-m", str(SFACE), "--host", "0.0.0.0", "--port", "0", "--allowed-host", "faces.example"]
    result = runner.invoke(app, args, env={"QUALIFACE_API_KEY": key})
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0, reachable from other machines" in result.stderr
    assert key not in result.output
    started[0][2].close()
    settings = started[0][0].state.settings
    assert (settings.api_key, settings.allowed_hosts) == (key, ("faces.example",))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--concurrency", "0", "concurrency"), ("--queue", "-1", "queue"), ("--body-timeout", "0", "body_timeout"),
     ("--port", "99999", "port"), ("--max-megapixels", "0", "max-megapixels")],
)  # fmt: skip
def test_serve_refuses_bad_limits_with_exit_2(started: list[Any], option: str, value: str, message: str) -> None:
    result = runner.invoke(app, ["serve", "-m", "no-such-model.onnx", option, value])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert started == []
