"""``POST /enroll`` and ``POST /search``: the gallery endpoints of ``qualiface serve --gallery G``.

Both take one encoded image as the body, as ``/embed`` does (``?aligned=1`` for a 112x112 aligned crop), and go
through the same queue, limits and error answers (:mod:`qualiface.serve.app`):

- ``POST /enroll?identity=NAME``: the image's largest face is added to the gallery under ``NAME`` and the gallery
  file is rewritten atomically (under a lock: enrolments are applied one at a time, each one whole or not at all;
  a search sees the gallery before or after it). The same image bytes twice: ``"added": false`` with the reason;
  under another identity: 409. Rewriting the file costs one write of the gallery per enrolment (about 2 KiB per
  image with 512-d embeddings).
- ``POST /search?top_k=5``: per face (``all_faces=1``: every face, else the largest), the top-k identities with
  similarity and confidence and the decision on the best one (:mod:`qualiface.gallery.identify`);
  ``threshold`` (a cosine, or ``learned`` for the model's threshold learned in training) replaces the model's. An
  empty gallery: 409.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from qualiface.decisions import LEARNED, ThresholdChoice, resolve_threshold
from qualiface.errors import InputError
from qualiface.gallery import Gallery, GalleryIndex, add_images, check_model, load_gallery, save_gallery
from qualiface.gallery.enroll import EnrollConflictError, check_identity, model_scaler
from qualiface.gallery.identify import check_top_k, search_faces
from qualiface.serve.schemas import ERROR_ANSWERS, ErrorAnswer, ModelStamp
from qualiface.serve.service import FaceService, RequestError

Infer = Callable[[Request, Callable[[bytes], dict[str, Any]]], Awaitable[Response]]


class GallerySize(BaseModel):
    file: str
    identities: int
    images: int


class EnrollAnswer(BaseModel):
    """What ``/enroll`` did with the image."""

    identity: str
    added: bool = Field(description="false when the same image was already enrolled under this identity")
    reason: str | None = Field(None, description="why it was not added")
    new_identity: bool
    quality: float | None
    gallery: GallerySize
    model: ModelStamp


class SearchCandidate(BaseModel):
    rank: int
    identity: str
    similarity: float
    confidence: float | None
    images: int


class SearchResult(BaseModel):
    """:class:`qualiface.gallery.identify.ProbeResult`."""

    file: str
    face_index: int
    box: list[float] | None
    detector_score: float | None
    quality: float | None
    quality_scaled: float | None
    identity: str | None = Field(description="the best identity when the decision is a match, else null")
    decision: dict[str, Any]
    candidates: list[SearchCandidate]


class SearchAnswer(BaseModel):
    model: ModelStamp
    gallery: GallerySize
    policy: dict[str, Any]
    results: list[SearchResult]


class GalleryService:
    """The gallery file behind the endpoints: loaded at start (or created by the first enrolment), checked
    against the service's model, appended to under a lock.

    Args:
        service: the :class:`~qualiface.serve.service.FaceService` whose model embeds the faces.
        path: the gallery file; it need not exist yet.
    """

    def __init__(self, service: FaceService, path: str | Path) -> None:
        self.service = service
        self.path = Path(path)
        self.stamp = service.model.card.stamp()
        model = service.model
        if self.path.exists():
            gallery = load_gallery(self.path)
            check_model(gallery, self.stamp, self.path)
        else:
            gallery = Gallery.empty(self.stamp, model.embedding_dim, model.quality_method)
        self._state = (gallery, GalleryIndex(gallery.templates))
        self._lock = threading.Lock()
        self._scale = model_scaler(model) if model.quality_method is not None else None

    @property
    def gallery(self) -> Gallery:
        return self._state[0]

    def size(self) -> dict[str, Any]:
        g = self.gallery
        return {"file": str(self.path), "identities": g.n_identities, "images": g.n_images}

    def enroll(self, data: bytes, identity: str, *, aligned: bool = False) -> dict[str, Any]:
        """Add the image's largest face under ``identity`` (module docstring)."""
        face = self.service.embed(data, aligned=aligned)["faces"][0]
        embedding = np.asarray([face["embedding"]], np.float32)
        quality = None if face.get("quality") is None else np.asarray([face["quality"]], np.float32)
        digest = hashlib.sha256(data).digest()
        with self._lock:
            current = self._state[0]
            if not current.n_images:
                current = dataclasses.replace(current, detector={"aligned": True} if aligned else None)
            try:
                report = add_images(
                    current,
                    embedding,
                    quality,
                    [identity],
                    [f"request:{digest.hex()[:16]}"],
                    [digest],
                    scale=self._scale,
                )
            except EnrollConflictError as exc:
                raise RequestError(HTTPStatus.CONFLICT, str(exc)) from None
            if report.added:
                save_gallery(report.gallery, self.path)
                self._state = (report.gallery, GalleryIndex(report.gallery.templates))
        return {
            "identity": identity.strip(),
            "added": bool(report.added),
            "reason": report.skipped[0][1] if report.skipped else None,
            "new_identity": bool(report.new_identities),
            "quality": face.get("quality"),
            "gallery": self.size(),
            "model": self.stamp,
        }

    def search(
        self,
        data: bytes,
        *,
        top_k: int = 5,
        threshold: ThresholdChoice = None,
        aligned: bool = False,
        all_faces: bool = False,
    ) -> dict[str, Any]:
        """The top-k identities of each face of the image and the decision on the best (module docstring)."""
        from qualiface.decisions import DecisionPolicy

        try:
            resolve_threshold(self.service.model.card, threshold, "query 'threshold'")
        except ValueError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        gallery, index = self._state
        if not gallery.n_identities:
            raise RequestError(HTTPStatus.CONFLICT, "the gallery holds no identity yet; enroll faces with POST /enroll")
        faces = self.service.faces(data, "image", aligned=aligned, all_faces=all_faces)
        policy = DecisionPolicy.from_model(self.service.model, threshold=threshold)
        with self.service.exclusive():
            results = search_faces(self.service.model, gallery, faces, k=top_k, policy=policy, index=index)
        return {
            "model": self.stamp,
            "gallery": self.size(),
            "policy": policy.describe(),
            "results": [r.to_dict() for r in results],
        }


_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_ANSWERS,
    408: {"model": ErrorAnswer, "description": "Request Timeout"},
    409: {
        "model": ErrorAnswer,
        "description": "Conflict: an image enrolled under another identity, or an empty gallery",
    },
}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "one encoded image (JPEG, PNG, BMP, GIF, TIFF, WEBP, PPM)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def add_gallery_routes(app: FastAPI, gallery: GalleryService, infer: Infer, dependencies: list[Any]) -> None:
    """Mount ``POST /enroll`` and ``POST /search`` on ``app`` (``infer`` is the application's request path:
    queue, body limits, worker thread, error answers)."""

    @app.post(
        "/enroll", response_model=EnrollAnswer, responses=_ERRORS, openapi_extra=_IMAGE_BODY, dependencies=dependencies
    )
    async def enroll(request: Request, identity: str, aligned: bool = False) -> Response:
        """Enroll the image's largest face under ``identity`` (appended to the gallery file)."""
        try:
            name = check_identity(identity, "query 'identity'")
        except InputError as exc:
            message = str(exc)
            return await infer(request, lambda body: _refuse(message))
        return await infer(request, lambda body: gallery.enroll(body, name, aligned=aligned))

    @app.post(
        "/search", response_model=SearchAnswer, responses=_ERRORS, openapi_extra=_IMAGE_BODY, dependencies=dependencies
    )
    async def search(
        request: Request,
        top_k: int = 5,
        threshold: str | None = None,
        aligned: bool = False,
        all_faces: bool = False,
    ) -> Response:
        """The top-k identities of the image's face(s) and a decision on the best; ``threshold``: a cosine in
        [-1, 1], or ``learned`` for the model's threshold learned in training (UniTSFace)."""

        def work(body: bytes) -> dict[str, Any]:
            try:
                k = check_top_k(top_k)
                choice = _threshold_query(threshold)
            except ValueError as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            return gallery.search(body, top_k=k, threshold=choice, aligned=aligned, all_faces=all_faces)

        return await infer(request, work)


def _threshold_query(text: str | None) -> ThresholdChoice:
    """The ``threshold`` query: ``None``, the word ``learned``, or a cosine in [-1, 1] (``ValueError`` otherwise)."""
    if text is None or text.strip().lower() == LEARNED:
        return None if text is None else LEARNED
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"query 'threshold' must be a cosine in [-1, 1] or {LEARNED!r}, got {text!r}") from None
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise ValueError(f"query 'threshold' must be a cosine in [-1, 1] or {LEARNED!r}, got {text}")
    return value


def _refuse(message: str) -> dict[str, Any]:
    raise RequestError(HTTPStatus.BAD_REQUEST, message)
