"""The server's access log: one line per request, every field a client chose escaped.

A request path, a query or a header value can carry control characters (``%0A`` in a path decodes to a newline),
which written raw would forge log lines or drive a terminal. :func:`escape` writes them the way ``repr`` does
(``\\x0a``, ``\\u2028``), and the backslash and the double quote as ``\\x5c`` and ``\\x22``, so that every
line of the log is one request and its quoted fields end where they seem to.
uvicorn's own access log is turned off (:mod:`qualiface.serve.server`) in favour of :class:`AccessLog`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The logger of the access lines (``INFO``).
access_logger = logging.getLogger("qualiface.serve.access")

#: A field longer than this is cut (``...`` and the count of characters left out).
MAX_FIELD = 300


def escape(text: str, limit: int = MAX_FIELD) -> str:
    """``text`` with every non-printable character, the backslash and ``"`` escaped, cut to ``limit`` characters."""
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    out = "".join(char if char.isprintable() and char not in '\\"' else _escape_char(char) for char in text)
    return f"{out}...(+{cut})" if cut > 0 else out


def _escape_char(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def request_line(scope: Scope) -> str:
    """``METHOD /path?query``, escaped (the path as the application sees it, percent-decoded)."""
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "") + (f"?{query}" if query else "")
    return f"{escape(scope.get('method', ''), 20)} {escape(path)}"


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return escape(f"{client[0]}:{client[1]}", 60) if client else "-"


class AccessLog:
    """ASGI middleware: logs ``client "METHOD /path?query" status bytes-sent ms user-agent`` after each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "bytes": 0}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            agent = next((v for k, v in scope.get("headers", []) if k == b"user-agent"), b"-").decode("latin-1")
            access_logger.info(
                '%s "%s" %d %dB %.1fms "%s"',
                client_address(scope),
                request_line(scope),
                answer["status"],
                answer["bytes"],
                (time.perf_counter() - start) * 1000,
                escape(agent, 120),
            )
