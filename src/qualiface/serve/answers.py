"""JSON answers that are always valid JSON: ``allow_nan=False``, and a 500 instead of a NaN sent to the client.

:func:`error_answer` is the one error form, ``{"error": message}``; it closes the connection when the request's
body was not read (a refused 400 MB upload is not drained), so the next request on it cannot be a body's tail.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from qualiface.serve.logs import escape

logger = logging.getLogger("qualiface.serve")


def json_answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``payload`` as JSON; a payload holding NaN or infinity is not sent (500 and a log line)."""
    try:
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        logger.error("answer not sent: %s", escape(str(exc)))
        status, headers = HTTPStatus.INTERNAL_SERVER_ERROR, None
        body = b'{"error":"the answer holds a non-finite number (NaN or infinity); not sent"}'
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_answer(
    connection: HTTPConnection,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    close: bool | None = None,
) -> Response:
    """``{"error": message}`` with ``status``; ``Connection: close`` when ``close``, or (``close=None``) when the
    request has a body, which the caller has not read."""
    headers = dict(headers or {})
    if close or (close is None and _may_have_body(connection)):
        headers["Connection"] = "close"
    return json_answer({"error": message}, status, headers)


def _may_have_body(connection: HTTPConnection) -> bool:
    length = connection.headers.get("content-length")
    return "transfer-encoding" in connection.headers or (length is not None and length.strip() != "0")
