"""Who may talk to the server: the optional API key and the ``Host`` check.

* **API key** (:func:`api_key_guard`): when the server has one, every endpoint except ``GET /health`` and
  ``GET /openapi.json`` needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (compared in constant time,
  :func:`hmac.compare_digest`); otherwise 401. ``/health`` stays open so that a load balancer can probe it; it
  tells the model's card, nothing about any request.
* **Host** (:class:`HostCheck`): a server bound to this machine only answers requests whose ``Host`` is one of
  its loopback names, so that a web page cannot reach it through DNS rebinding (a name of the attacker's that
  resolves to ``127.0.0.1``); any other ``Host`` gets 400.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Collection
from http import HTTPStatus
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from qualiface.serve.answers import error_answer
from qualiface.serve.logs import escape

#: The names of this machine that a loopback-bound server answers to (and the bound address itself).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> tuple[str, ...] | None:
    """The ``Host`` names a server bound to ``bind_host`` answers by default: this machine's names when it is
    bound to loopback, any (``None``) otherwise (a public server is named by its operator: ``--allowed-host``)."""
    return (*LOOPBACK_NAMES, bind_host.strip("[]")) if is_loopback(bind_host) else None


def api_key_guard(key: str) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency refusing (401) a request that does not carry ``key``."""
    expected = key.encode()

    async def require_api_key(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> None:
        given = [value for value in (bearer.credentials if bearer else None, header) if value is not None]
        if not any(hmac.compare_digest(value.encode(), expected) for value in given):
            raise HTTPException(
                HTTPStatus.UNAUTHORIZED,
                ("wrong API key" if given else "missing API key")
                + ": send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def host_name(host_header: str) -> str:
    """The name of a ``Host`` header without its port: ``[::1]:8000`` -> ``::1``, ``Example:80`` -> ``example``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """ASGI middleware: 400 for an HTTP request whose ``Host`` name is not in ``allowed``."""

    def __init__(self, app: ASGIApp, allowed: Collection[str]) -> None:
        self.app = app
        self.allowed = frozenset(name.lower() for name in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            if host_name(host) not in self.allowed:
                message = f"Host {escape(host, 100)!r} is not served here (this server answers {sorted(self.allowed)})"
                await error_answer(HTTPConnection(scope), HTTPStatus.BAD_REQUEST, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
