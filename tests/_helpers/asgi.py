"""Driving an ASGI application by hand: any header (a negative ``Content-Length``), a body sent chunk by chunk with
a count of the chunks the application took, and delays between them (a slow client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks_read: int = 0  # chunks of the request body the application received

    def json(self) -> Any:
        """The body as strict JSON (NaN / Infinity refused, as any JSON parser but Python's would)."""

        def refuse(constant: str) -> None:
            raise ValueError(f"invalid JSON constant {constant}")

        return json.loads(self.body, parse_constant=refuse)


def call(app: Any, method: str, path: str, **options: Any) -> Answer:
    """One request to ``app`` (:func:`call_async`'s options); the body is ``chunks`` (``delay`` seconds before
    each), taken lazily."""
    return asyncio.run(call_async(app, method, path, **options))


async def call_async(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    chunks: Iterable[bytes] = (),
    delay: float = 0.0,
    query: str = "",
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> Answer:
    answer = Answer()
    pending: Iterator[bytes] = iter(chunks)
    done = asyncio.Event()
    finished_body = False

    async def receive() -> dict[str, Any]:
        nonlocal finished_body
        if finished_body:
            await done.wait()
            return {"type": "http.disconnect"}
        if delay:
            await asyncio.sleep(delay)
        chunk = next(pending, None)
        if chunk is None:
            finished_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        answer.chunks_read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            if not message.get("more_body", False):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return answer
