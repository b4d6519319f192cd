"""The server's bounds on one request: its body (size and time) and its place in the inference queue.

* :func:`read_body` reads the body chunk by chunk and stops at ``max_bytes + 1`` bytes with 413, whatever the
  ``Content-Length`` says; a ``Content-Length`` over the limit is refused before any byte is read, one that is not
  a plain decimal number (negative, signed, several values) is a 400, and a body longer or shorter than its
  ``Content-Length`` is a 400. A body not received within ``timeout`` seconds is a 408.
* :class:`InferenceLimiter` admits at most ``concurrency + queue`` requests; ``concurrency`` of them run in worker
  threads at once, the others wait. A request beyond that is refused at once with 503 and ``Retry-After``.

A request is admitted *before* its body is read, and the bodies being read or waiting share one budget of
``max_buffered`` bytes: a chunk that would take the bodies in memory past it ends its request with 503 and
``Retry-After`` (a server busy with large bodies, not a client error). So the memory held by bodies is at most
``max_buffered`` (twice one body for the instant it becomes ``bytes``; plus uvicorn's 64 KiB read buffer per
connection), whatever ``concurrency + queue`` allows, and the decoded images at most ``concurrency`` times the
decoder's bound.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request

from qualiface.serve.service import RequestError

T = TypeVar("T")

_DECIMAL = re.compile(r"[0-9]{1,19}")


def declared_length(values: Iterable[str]) -> int | None:
    """The request's ``Content-Length`` (``None`` when absent); 400 unless it is one plain decimal number."""
    values = list(values)
    if not values:
        return None
    if len(values) > 1 or not _DECIMAL.fullmatch(values[0].strip()):
        shown = ", ".join(repr(v[:30]) for v in values[:3])
        raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {shown}: expected one decimal number")
    return int(values[0])


async def read_body(
    request: Request, max_bytes: int, timeout: float, reserve: Callable[[int], None] | None = None
) -> bytearray:
    """The request body, never more than ``max_bytes`` held (see the module docstring for the refusals);
    ``reserve(n)`` is called before ``n`` more bytes are kept (it raises to refuse them)."""
    declared = declared_length(request.headers.getlist("content-length"))
    if declared is not None and declared > max_bytes:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {declared:,} bytes is over the limit of {max_bytes:,}"
        )
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                if len(body) + len(chunk) > max_bytes:
                    raise RequestError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over the limit of {max_bytes:,} bytes"
                    )
                if declared is not None and len(body) + len(chunk) > declared:
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"body longer than its Content-Length of {declared}")
                if reserve is not None:
                    reserve(len(chunk))
                body += chunk
    except TimeoutError:
        raise RequestError(
            HTTPStatus.REQUEST_TIMEOUT, f"body not received within {timeout:g} s ({len(body):,} bytes read)"
        ) from None
    if declared is not None and len(body) != declared:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body of {len(body)} bytes, its Content-Length says {declared}")
    return body


class InferenceLimiter:
    """At most ``concurrency`` calls running in worker threads and ``queue`` waiting; the rest refused (503).

    Use it from one event loop (the count is not locked): :meth:`admit` holds a place (running or waiting) for the
    request, :meth:`run` runs a function in a worker thread once a worker is free.
    """

    def __init__(
        self, concurrency: int = 1, queue: int = 64, retry_after: int = 1, max_buffered: int = 64 << 20
    ) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be at least 1, got {max_buffered}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if queue < 0:
            raise ValueError(f"queue must be at least 0, got {queue}")
        self.concurrency = concurrency
        self.queue = queue
        self.retry_after = retry_after
        self.max_buffered = max_buffered
        self.admitted = 0
        self.buffered = 0
        self._workers: anyio.CapacityLimiter | None = None  # made in the event loop (older anyio needs one)

    @contextlib.contextmanager
    def admit(self) -> Iterator[Callable[[int], None]]:
        """Hold a place for one request inside the block, and give it ``reserve(n)`` to count ``n`` more body
        bytes against ``max_buffered`` (released at the end of the block); :class:`RequestError` 503 with
        ``Retry-After`` when all places, or the body budget, are taken."""
        if self.admitted >= self.concurrency + self.queue:
            raise self._busy(f"{self.admitted} requests running or waiting (limit {self.concurrency} + {self.queue})")
        self.admitted += 1
        held = 0

        def reserve(count: int) -> None:
            nonlocal held
            if self.buffered + count > self.max_buffered:
                raise self._busy(f"request bodies in memory would pass {self.max_buffered:,} bytes")
            self.buffered += count
            held += count

        try:
            yield reserve
        finally:
            self.admitted -= 1
            self.buffered -= held

    def _busy(self, why: str) -> RequestError:
        return RequestError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"busy: {why}; retry later",
            headers={"Retry-After": str(self.retry_after)},
        )

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread, after waiting for one of the ``concurrency`` workers."""
        if self._workers is None:
            self._workers = anyio.CapacityLimiter(self.concurrency)
        return await anyio.to_thread.run_sync(fn, limiter=self._workers)
