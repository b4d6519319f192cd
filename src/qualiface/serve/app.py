"""The ASGI application (FastAPI): the endpoints over a :class:`~qualiface.serve.service.FaceService`.

Each inference request goes: ``Host`` check, API key, a place in the inference queue (or 503), the body read
within its limits (413, 408, 400), then decoding, detection and the model in a worker thread, one of at most
``concurrency`` (:mod:`qualiface.serve.limits`). Every answer is JSON (:mod:`qualiface.serve.answers`), errors
included: unknown paths (404) and wrong methods (405) too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import qualiface
from qualiface.errors import InputError
from qualiface.serve.answers import error_answer, json_answer
from qualiface.serve.guards import HostCheck, api_key_guard
from qualiface.serve.limits import InferenceLimiter, read_body
from qualiface.serve.logs import AccessLog, escape
from qualiface.serve.schemas import (
    ERROR_ANSWERS,
    EmbedAnswer,
    HealthAnswer,
    QualityAnswer,
    VerifyAnswer,
    VerifyRequest,
    parse_verify,
)
from qualiface.serve.service import FaceService, RequestError

logger = logging.getLogger("qualiface.serve")

ENDPOINTS = (
    "GET /health, POST /embed, POST /quality, POST /verify, with --gallery POST /enroll and POST /search "
    "(GET /openapi.json describes them)"
)

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "one encoded image (JPEG, PNG, BMP, GIF, TIFF, WEBP, PPM)",
        "content": {"application/octet-stream": _BINARY, "image/*": _BINARY},
    }
}
_VERIFY_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": VerifyRequest.model_json_schema()}}}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_ANSWERS,
    408: {"model": ERROR_ANSWERS[400]["model"], "description": "Request Timeout"},
}


@dataclass(frozen=True)
class ServeSettings:
    """The limits of the application (the server's connection limits are :class:`~qualiface.serve.server.
    ServerOptions`).

    Attributes:
        max_bytes: the largest request body; a larger one gets 413 as soon as it is seen.
        concurrency: requests decoded and run at once, each in a worker thread.
        queue: requests waiting for a worker; beyond ``concurrency + queue``: 503 with ``Retry-After``.
        max_buffered: bytes of request bodies held at once, over every request; beyond: 503 with ``Retry-After``.
        body_timeout: seconds to receive a body; then 408.
        retry_after: the ``Retry-After`` seconds of a 503.
        api_key: when set, every endpoint but ``/health`` and ``/openapi.json`` requires it.
        allowed_hosts: the ``Host`` names answered (others: 400); ``None`` answers any.
    """

    max_bytes: int = 10 * 1024 * 1024
    concurrency: int = 1
    queue: int = 64
    max_buffered: int = 64 * 1024 * 1024
    body_timeout: float = 30.0
    retry_after: int = 1
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, low in (("max_bytes", 1), ("concurrency", 1), ("queue", 0), ("retry_after", 0), ("max_buffered", 1)):
            if getattr(self, name) < low:
                raise InputError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not 0 < self.body_timeout < float("inf"):
            raise InputError(f"body_timeout must be a positive number of seconds, got {self.body_timeout}")
        if self.api_key is not None and (not self.api_key or not self.api_key.isascii() or " " in self.api_key):
            raise InputError("api_key must be non-empty printable ASCII without spaces")


def create_app(service: FaceService, settings: ServeSettings | None = None, gallery: Any = None) -> FastAPI:
    """The application answering the endpoints of :mod:`qualiface.serve` with ``service``; with ``gallery`` (a
    :class:`~qualiface.serve.gallery_routes.GalleryService`) also ``/enroll`` and ``/search``."""
    settings = settings or ServeSettings()
    limiter = InferenceLimiter(settings.concurrency, settings.queue, settings.retry_after, settings.max_buffered)
    app = FastAPI(
        title="qualiface",
        version=qualiface.__version__,
        description="Face embeddings, quality and verification over one model.",
        docs_url=None,  # the interactive pages load scripts from a CDN; the schema stays at /openapi.json
        redoc_url=None,
    )
    app.state.service, app.state.settings, app.state.limiter = service, settings, limiter
    guarded = [Depends(api_key_guard(settings.api_key))] if settings.api_key else []

    async def infer(request: Request, work: Callable[[bytes], dict[str, Any]]) -> Response:
        request.state.body_read = False
        try:
            with limiter.admit() as reserve:
                body = bytes(await read_body(request, settings.max_bytes, settings.body_timeout, reserve))
                request.state.body_read = True
                payload = await limiter.run(lambda: work(body))
        except RequestError as exc:  # refused before its body was read through: close the connection
            return error_answer(request, exc.status, str(exc), exc.headers, close=not request.state.body_read)
        except ClientDisconnect:
            message = "the client went away before sending its body"
            return error_answer(request, HTTPStatus.BAD_REQUEST, message, close=True)
        except Exception as exc:  # keep serving; the client gets a 500, the log one escaped line (traceback: debug)
            logger.error("%s failed: %s", escape(request.scope["path"]), escape(f"{type(exc).__name__}: {exc}"))
            logger.debug("traceback of the failure", exc_info=True)
            message = f"internal error ({type(exc).__name__}); see the server log"
            return error_answer(request, HTTPStatus.INTERNAL_SERVER_ERROR, message, close=not request.state.body_read)
        return json_answer(payload)

    @app.get("/health", response_model=HealthAnswer)
    async def health() -> Response:
        return json_answer(service.health())

    @app.post("/embed", response_model=EmbedAnswer, responses=_ERRORS, openapi_extra=_IMAGE_BODY, dependencies=guarded)
    async def embed(request: Request, aligned: bool = False, all_faces: bool = False) -> Response:
        """Embeddings of the faces of one image (``aligned``: a 112x112 aligned crop; ``all_faces``: every face)."""
        return await infer(request, lambda body: service.embed(body, aligned=aligned, all_faces=all_faces))

    @app.post(
        "/quality", response_model=QualityAnswer, responses=_ERRORS, openapi_extra=_IMAGE_BODY, dependencies=guarded
    )
    async def quality(request: Request, aligned: bool = False, all_faces: bool = False) -> Response:
        """Quality of the faces of one image (the model's trained quality, else its embedding norm)."""
        return await infer(request, lambda body: service.quality(body, aligned=aligned, all_faces=all_faces))

    @app.post(
        "/verify", response_model=VerifyAnswer, responses=_ERRORS, openapi_extra=_VERIFY_BODY, dependencies=guarded
    )
    async def verify(request: Request, aligned: bool = False) -> Response:
        """Compare the first face of ``a`` with the first face of ``b``."""

        def work(body: bytes) -> dict[str, Any]:
            a, b, threshold = parse_verify(body)
            return service.verify(a, b, threshold=threshold, aligned=aligned)

        return await infer(request, work)

    if gallery is not None:
        from qualiface.serve.gallery_routes import add_gallery_routes

        add_gallery_routes(app, gallery, infer, guarded)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message, path = str(exc.detail), escape(request.scope["path"], 100)
        if exc.status_code == HTTPStatus.NOT_FOUND:
            message = f"unknown path {path}; the endpoints are {ENDPOINTS}"
        elif exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {escape(request.method, 20)} not allowed on {path}; use {allowed}"
        return error_answer(request, exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{' '.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error_answer(request, HTTPStatus.BAD_REQUEST, escape("; ".join(parts)))

    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(AccessLog)  # added last: outermost, so it logs the Host refusals too
    return app
