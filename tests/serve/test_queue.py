"""The inference queue: ``concurrency`` requests run, ``queue`` wait, the next one gets 503 with ``Retry-After`` at
once (not after a wait), and the places are given back when the requests finish."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from _helpers.asgi import call_async
from qualiface.serve import ServeSettings, create_app
from qualiface.serve.limits import InferenceLimiter


class _SlowService:
    """A model that holds each request until ``release`` is set, counting the requests running at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def embed(self, data: bytes, **flags: Any) -> dict[str, Any]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.release.wait(timeout=30)
        with self._lock:
            self.running -= 1
        return {"faces": []}


def _post(app: Any) -> Any:
    return call_async(app, "POST", "/embed", headers=[("content-length", "1")], chunks=[b"x"])


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize(("concurrency", "queue"), [(1, 0), (1, 1), (2, 1)])
def test_a_full_queue_answers_503_with_retry_after_at_once(concurrency: int, queue: int) -> None:
    service = _SlowService()
    app = create_app(service, ServeSettings(concurrency=concurrency, queue=queue, retry_after=3))  # type: ignore[arg-type]
    limiter: InferenceLimiter = app.state.limiter

    async def scenario() -> None:
        held = []
        for count in range(1, concurrency + queue + 1):
            held.append(asyncio.ensure_future(_post(app)))
            await _until(lambda count=count: limiter.admitted == count)
        await _until(lambda: service.running == concurrency)
        refused = await asyncio.wait_for(_post(app), timeout=5)  # answered while the others still run
        assert refused.status == 503
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"].startswith("busy: ")
        assert refused.chunks_read == 0  # refused before its body was read
        service.release.set()
        assert [answer.status for answer in await asyncio.gather(*held)] == [200] * (concurrency + queue)
        assert limiter.admitted == 0
        assert (await _post(app)).status == 200

    asyncio.run(scenario())
    assert service.most_running == concurrency


def test_the_limiter_refuses_bad_bounds() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        InferenceLimiter(0, 1)
    with pytest.raises(ValueError, match="queue"):
        InferenceLimiter(1, -1)


def test_bodies_in_memory_share_one_budget() -> None:
    """Four 1 MiB bodies against a 2.5 MiB budget and a queue of 10: two are held (their requests wait for the one
    worker), the third is refused with 503 + Retry-After once its chunks would pass the budget (before: every
    admitted request could hold max_bytes, 65 x 10 MiB with the default queue); the budget is given back after."""
    service = _SlowService()
    settings = ServeSettings(concurrency=1, queue=10, max_buffered=5 << 19, max_bytes=2 << 20)
    app = create_app(service, settings)  # type: ignore[arg-type]
    limiter: InferenceLimiter = app.state.limiter
    chunk = bytes(1 << 16)

    def post() -> Any:
        length = str(16 * len(chunk))
        return call_async(app, "POST", "/embed", headers=[("content-length", length)], chunks=[chunk] * 16)

    async def scenario() -> None:
        held = [asyncio.ensure_future(post())]
        await _until(lambda: service.running == 1)
        held.append(asyncio.ensure_future(post()))
        await _until(lambda: limiter.buffered == 2 << 20)
        refused = await asyncio.wait_for(post(), timeout=5)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert "request bodies in memory would pass 2,621,440 bytes" in refused.json()["error"]
        assert limiter.buffered <= settings.max_buffered
        service.release.set()
        assert [answer.status for answer in await asyncio.gather(*held)] == [200, 200]
        assert limiter.buffered == 0
        assert limiter.admitted == 0

    asyncio.run(scenario())


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        InferenceLimiter(1, 1, max_buffered=0)
