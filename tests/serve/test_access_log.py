"""The access log: one line per request, with the client's path, query and User-Agent escaped, so that a request
cannot forge a log line or send terminal escapes."""

from __future__ import annotations

import pytest

from _helpers.asgi import call
from qualiface.serve import FaceService, create_app
from qualiface.serve.logs import escape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/embed", "/embed"),
        ("/a\nb", "/a\\x0ab"),
        ("\r\x00\x1b[31m\x7f", "\\x0d\\x00\\x1b[31m\\x7f"),
        ("back\\slash", "back\\x5cslash"),
        ('a "quoted" b', "a \\x22quoted\\x22 b"),
        ("line\u2028sep\x85", "line\\u2028sep\\x85"),
        ("é ü 日本", "é ü 日本"),
    ],
)
def test_escape_writes_non_printable_characters_and_backslashes_as_escapes(text: str, expected: str) -> None:
    assert escape(text) == expected


def test_escape_cuts_long_fields() -> None:
    assert escape("x" * 1000, 10) == "x" * 10 + "...(+990)"


def test_each_request_is_one_escaped_log_line(service: FaceService, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(service)
    with caplog.at_level("INFO", logger="qualiface.serve.access"):
        call(
            app,
            "GET",
            '/x\n127.0.0.1 "GET /health" 200\x1b[2J',
            query="q=%0A\n",
            headers=[("user-agent", "agent\r\nforged")],
            client=("10.1.2.3", 4567),
        )
    [record] = [r for r in caplog.records if r.name == "qualiface.serve.access"]
    line = record.getMessage()
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert line.startswith('10.1.2.3:4567 "GET /x\\x0a127.0.0.1 \\x22GET /health\\x22 200\\x1b[2J?q=%0A\\x0a" 404 ')
    assert line.endswith('"agent\\x0d\\x0aforged"')
