"""A small local HTTP API over one model: embed, quality, verify (standard library server, one model, a lock).

Endpoints (JSON responses; errors are ``{"error": message}`` with a 4xx status):

* ``GET /health``: the model's name, embedding size, quality method and threshold.
* ``POST /embed`` and ``POST /quality``: the body is one encoded image (JPEG, PNG, ...); ``?aligned=1`` takes a
  112x112 aligned crop as it is, ``?all_faces=1`` returns every face. Answer: ``{"faces": [{"embedding": [...],
  "quality": q, "box": [x1, y1, x2, y2], "score": s}, ...]}``.
* ``POST /verify``: a JSON body ``{"a": base64 image, "b": base64 image, "threshold": optional float}``; answer as
  :class:`qualiface.use.Comparison`.

Limits: bodies over ``max_bytes`` get 413 before they are read; images over ``max_pixels`` and bytes that are not
an image get 400 with the reason; an image without a face gets 422. Bind to ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from qualiface.detect.faces import FaceSet, align_image
from qualiface.models.card import check_threshold
from qualiface.models.face_model import FaceModel
from qualiface.use import compare, embed_faces

logger = logging.getLogger(__name__)


class RequestError(Exception):
    """A client error: ``status`` and a message for the JSON answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class FaceService:
    """The model, the detector and the limits behind the server (usable without HTTP)."""

    def __init__(self, model: FaceModel, *, max_pixels: int = 40_000_000, detector: Any = None) -> None:
        self.model = model
        self.max_pixels = max_pixels
        self._detector = detector
        self._lock = threading.Lock()

    @property
    def detector(self) -> Any:
        if self._detector is None:
            from qualiface.detect.yunet import YuNetDetector

            self._detector = YuNetDetector()
        return self._detector

    def faces(self, data: bytes, name: str, *, aligned: bool = False, all_faces: bool = False) -> FaceSet:
        """Aligned faces of one encoded image; :class:`RequestError` for non-images, huge images, no face."""
        if not data:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name}: empty body; send the image bytes")
        image = self._decode(data, name)
        with self._lock:
            faces = align_image(
                image, name, detector=None if aligned else self.detector, aligned=aligned, all_faces=all_faces
            )
        for failure in faces.failures:
            status = HTTPStatus.UNPROCESSABLE_ENTITY if failure.reason == "no_face" else HTTPStatus.BAD_REQUEST
            raise RequestError(status, failure.message)
        return faces

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        """RGB ``uint8`` pixels of an encoded image, after checking its size from the header."""
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > self.max_pixels:
                    raise RequestError(
                        HTTPStatus.BAD_REQUEST,
                        f"{name}: {width}x{height} pixels is over the limit of {self.max_pixels}",
                    )
                return np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name}: not an image ({exc})") from None

    def embed(self, data: bytes, *, aligned: bool = False, all_faces: bool = False) -> dict[str, Any]:
        faces = self.faces(data, "image", aligned=aligned, all_faces=all_faces)
        with self._lock, _unprocessable():
            embeddings, quality = embed_faces(self.model, faces)
        return {
            "model": self.model.card.stamp(),
            "faces": [self._face(faces, i, embeddings[i], quality) for i in range(len(faces))],
        }

    def quality(self, data: bytes, *, aligned: bool = False, all_faces: bool = False) -> dict[str, Any]:
        info = self.model.quality_info(allow_untrained=True)
        assert info is not None
        faces = self.faces(data, "image", aligned=aligned, all_faces=all_faces)
        with self._lock, _unprocessable():
            _, scores = embed_faces(self.model, faces, untrained_quality=True)
        assert scores is not None
        return {
            "method": info.method,
            "source": info.source,
            "model": self.model.card.stamp(),
            "faces": [{**self._face(faces, i, None, None), "quality": float(scores[i])} for i in range(len(faces))],
        }

    def verify(self, body: dict[str, Any], *, aligned: bool = False) -> dict[str, Any]:
        images = {}
        for key in ("a", "b"):
            value = body.get(key)
            if not isinstance(value, str):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"field {key!r}: a base64-encoded image is required")
            try:
                images[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"field {key!r}: not valid base64 ({exc})") from None
        threshold = body.get("threshold")
        if threshold is not None:
            try:
                threshold = check_threshold(threshold, "field 'threshold'")
            except ValueError as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        faces_a = self.faces(images["a"], "a", aligned=aligned)
        faces_b = self.faces(images["b"], "b", aligned=aligned)
        with self._lock, _unprocessable():
            result = compare(self.model, faces_a, faces_b, threshold=threshold)
        return result.to_dict()

    def health(self) -> dict[str, Any]:
        m = self.model
        return {
            "status": "ok",
            "model": m.name,
            "embedding_dim": m.embedding_dim,
            "quality_method": m.quality_method,
            "threshold": m.threshold,
            "card": m.card.to_dict(),
        }

    @staticmethod
    def _face(faces: FaceSet, i: int, embedding: np.ndarray | None, quality: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = {"face_index": int(faces.sources[i][1])}
        detection = faces.detections[i]
        if detection is not None:
            out["box"] = [float(v) for v in detection.box]
            out["score"] = float(detection.score)
        if embedding is not None:
            out["embedding"] = [float(v) for v in embedding]
        if quality is not None:
            out["quality"] = float(quality[i])
        return out


@contextlib.contextmanager
def _unprocessable() -> Iterator[None]:
    """A model-side refusal of the faces (``ValueError``) as a 422 with its one-line message."""
    try:
        yield
    except ValueError as exc:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None


def make_server(
    service: FaceService, host: str = "127.0.0.1", port: int = 8000, *, max_bytes: int = 10 * 1024 * 1024
) -> ThreadingHTTPServer:
    """A threading HTTP server answering the endpoints of the module docstring (``port=0`` picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "qualiface"

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            body = json.dumps(payload, allow_nan=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length") from None
            if length > max_bytes:
                self.close_connection = True
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes is over the limit of {max_bytes}"
                )
            return self.rfile.read(length)

        def do_GET(self) -> None:
            if urlparse(self.path).path == "/health":
                self._send(HTTPStatus.OK, service.health())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"unknown endpoint {self.path}; see GET /health"})

        def do_POST(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            flags = {k: query.get(k, ["0"])[0] in ("1", "true", "yes") for k in ("aligned", "all_faces")}
            try:
                if url.path == "/embed":
                    self._send(HTTPStatus.OK, service.embed(self._body(), **flags))
                elif url.path == "/quality":
                    self._send(HTTPStatus.OK, service.quality(self._body(), **flags))
                elif url.path == "/verify":
                    try:
                        body = json.loads(self._body() or b"{}")
                    except json.JSONDecodeError as exc:
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({exc})") from None
                    if not isinstance(body, dict):
                        raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object with 'a' and 'b'")
                    self._send(HTTPStatus.OK, service.verify(body, aligned=flags["aligned"]))
                else:
                    raise RequestError(HTTPStatus.NOT_FOUND, f"unknown endpoint {url.path}: /embed, /quality, /verify")
            except RequestError as exc:
                self._send(exc.status, {"error": str(exc)})
            except Exception as exc:  # keep serving; report the failure to the client and the log
                logger.exception("request %s failed", self.path)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    return ThreadingHTTPServer((host, port), Handler)
