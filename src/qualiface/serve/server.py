"""Running the application on uvicorn, with bounds on connections as well as requests.

uvicorn (asyncio) holds an idle connection as a small object, not a thread, and closes one that stays idle
``keep_alive`` seconds after an answer. It has no timeout for a request's head, though: a client that connects
and sends nothing, or trickles a header byte every few seconds, keeps its connection (the keep-alive timer is
reset by every byte). :class:`BoundedH11Protocol` adds that timeout (``header_timeout``: the head of each
request must arrive within it, counted from the connection or from the previous answer) and a cap on open
connections (beyond ``max_connections`` a new one gets a 503 and is closed). The body's own timeout is the
application's (:func:`qualiface.serve.limits.read_body`).

Other settings: a listen backlog of 2048 (uvicorn's default; the standard-library server had 5), heads over
16 KiB refused by h11, no websockets, no lifespan, ``X-Forwarded-For`` not trusted (the log shows the peer),
no ``Server`` header, uvicorn's access log off (the application logs every request, escaped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from qualiface.errors import InputError
from qualiface.serve.guards import is_loopback

logger = logging.getLogger("qualiface.serve")

_BUSY_BODY = json.dumps({"error": "busy: too many open connections; retry later"}).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n" % len(_BUSY_BODY)
) + _BUSY_BODY


@dataclass(frozen=True)
class ServerOptions:
    """Where and how uvicorn serves (the application's own limits are :class:`~qualiface.serve.app.ServeSettings`).

    Attributes:
        host: the address to bind; ``127.0.0.1`` keeps the server on this machine.
        port: the TCP port; 0 takes a free one.
        keep_alive: seconds an idle connection is kept after an answer.
        header_timeout: seconds for the head of a request to arrive.
        max_connections: open connections at most; a new one beyond gets 503.
        backlog: connections the kernel holds before they are accepted.
        graceful_shutdown: seconds the requests in flight get to finish on shutdown.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    keep_alive: int = 5
    header_timeout: float = 10.0
    max_connections: int = 1000
    backlog: int = 2048
    graceful_shutdown: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be within [0, 65535], got {self.port}")
        for name in ("keep_alive", "header_timeout", "max_connections", "backlog", "graceful_shutdown"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise InputError(f"{name} must be positive, got {value}")


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a timeout for each request head and a cap on open connections."""

    header_timeout: float = 10.0
    max_connections: int = 1000
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        """Start the timer while no request head is complete (h11's client state is IDLE); stop it otherwise."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)
        elif not waiting:
            self._stop_timer()

    def _head_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            logger.debug("closing a connection: no request head within %g s", self.header_timeout)
            self.transport.close()

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


def protocol_class(header_timeout: float, max_connections: int) -> type[BoundedH11Protocol]:
    """:class:`BoundedH11Protocol` with these bounds (uvicorn builds one protocol object per connection)."""
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )


def server_config(app: Any, options: ServerOptions) -> uvicorn.Config:
    """The uvicorn configuration of the module docstring."""
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        http=protocol_class(options.header_timeout, options.max_connections),
        ws="none",
        lifespan="off",
        log_config=None,  # the caller's logging configuration
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=options.keep_alive,
        timeout_graceful_shutdown=options.graceful_shutdown,
        backlog=options.backlog,
        h11_max_incomplete_event_size=16 * 1024,
    )


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (connections wait in the backlog until uvicorn accepts
    them, so a client told the URL is never refused); :class:`InputError` when the address is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; with proto 0, Nagle's algorithm and the
    # client's delayed ACK add 40 ms to every answer (sent as two writes: head, then body)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell the operator of a server bound beyond this machine (``None`` for a loopback address)."""
    if is_loopback(host):
        return None
    if api_key is None:
        return (
            f"WARNING: serving on {host} without an API key: anyone who can reach this port can run the model. "
            "Set --api-key or QUALIFACE_API_KEY, and put a TLS proxy in front (this server speaks plain HTTP)."
        )
    return (
        f"warning: serving on {host}, reachable from other machines; requests need the API key, but travel in "
        "plain HTTP: put a TLS proxy in front."
    )


def run_server(app: Any, options: ServerOptions, sock: socket.socket | None = None) -> None:
    """Serve ``app`` until interrupted (Ctrl-C / SIGTERM: the requests in flight finish first)."""
    sock = sock or bind(options.host, options.port, options.backlog)
    uvicorn.Server(server_config(app, options)).run(sockets=[sock])


@contextlib.contextmanager
def serving_in_thread(app: Any, options: ServerOptions) -> Iterator[str]:
    """Serve ``app`` from a background thread inside the block; yields the base URL (``port=0``: a free port)."""
    sock = bind(options.host, options.port, options.backlog)
    server = uvicorn.Server(server_config(app, options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped before it started")
            threading.Event().wait(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
