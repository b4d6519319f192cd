"""The functional core of the server: one model, its detector and the image limit, without HTTP.

:class:`FaceService` takes encoded image bytes and returns plain dictionaries (the JSON answers of the server);
every refusal is a :class:`RequestError` carrying the HTTP status it stands for (400 bad input, 422 no face).
The model and the detector are called by one thread at a time (a lock): more worker threads overlap the decoding
and alignment of one request with the inference of another, never two inferences.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import numpy as np

from qualiface.decisions import ThresholdChoice, resolve_threshold
from qualiface.detect.faces import FaceSet, align_image
from qualiface.detect.options import DetectorOptions
from qualiface.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from qualiface.models.face_model import FaceModel
from qualiface.use import compare, embed_faces


class RequestError(Exception):
    """A refused request: the HTTP ``status``, a one-line message, and headers for the answer (``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.headers = dict(headers or {})


class FaceService:
    """The model, the detector and the pixel limit behind the server (usable without HTTP).

    Args:
        model: the face model.
        max_pixels: the largest ``width x height`` decoded; checked from the image header before decoding
            (:func:`qualiface.imaging.decode_image`).
        detector: the face detector; when ``None``, the one ``detector_options`` build (YuNet), loaded at the first
            request that needs it.
        detector_options: how faces are found (:class:`~qualiface.detect.options.DetectorOptions`, as the photo
            commands' ``--detector``; default the defaults): thresholds, smallest face, largest side, retries.
    """

    def __init__(
        self,
        model: FaceModel,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        detector: Any = None,
        detector_options: DetectorOptions | None = None,
    ) -> None:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
        self.model = model
        self.max_pixels = max_pixels
        self.detector_options = detector_options if detector_options is not None else DetectorOptions()
        self._detector = detector
        self._lock = threading.Lock()

    @property
    def detector(self) -> Any:
        """The face detector (built from :attr:`detector_options` unless one was given); call it holding the
        service's lock."""
        if self._detector is None:
            self._detector = self.detector_options.create()
        return self._detector

    def faces(self, data: bytes, name: str, *, aligned: bool = False, all_faces: bool = False) -> FaceSet:
        """Aligned faces of one encoded image; :class:`RequestError` for non-images, huge images, no face."""
        if not data:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name}: empty body; send the image bytes")
        try:
            image = decode_image(data, name, max_pixels=self.max_pixels)
        except ImageDecodeError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        with self._lock:
            faces = align_image(
                image,
                name,
                detector=None if aligned else self.detector,
                aligned=aligned,
                all_faces=all_faces,
                options=self.detector_options,
            )
        for failure in faces.failures:
            status = HTTPStatus.UNPROCESSABLE_ENTITY if failure.reason == "no_face" else HTTPStatus.BAD_REQUEST
            raise RequestError(status, failure.message)
        return faces

    def embed(self, data: bytes, *, aligned: bool = False, all_faces: bool = False) -> dict[str, Any]:
        """``{"model": stamp, "faces": [{"face_index", "box", "score", "embedding", "quality"}, ...]}``."""
        faces = self.faces(data, "image", aligned=aligned, all_faces=all_faces)
        with self._lock, _unprocessable():
            embeddings, quality = embed_faces(self.model, faces)
        return {
            "model": self.model.card.stamp(),
            "faces": [_face(faces, i, embeddings[i], quality) for i in range(len(faces))],
        }

    def quality(self, data: bytes, *, aligned: bool = False, all_faces: bool = False) -> dict[str, Any]:
        """``{"method", "source", "model", "faces": [{"face_index", "box", "score", "quality"}, ...]}``."""
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
            "faces": [{**_face(faces, i, None, None), "quality": float(scores[i])} for i in range(len(faces))],
        }

    def verify(self, a: bytes, b: bytes, *, threshold: ThresholdChoice = None, aligned: bool = False) -> dict[str, Any]:
        """The comparison of the first face of ``a`` with the first face of ``b`` (:class:`qualiface.use.Comparison`
        as a dictionary); ``threshold`` must already be checked (finite, within [-1, 1]), or ``"learned"`` for
        the model's learned threshold (a model without one: 400). Without one the model's calibrated threshold
        decides; a learned threshold never decides unless asked for."""
        try:
            resolve_threshold(self.model.card, threshold, "field 'threshold'")
        except ValueError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        faces_a = self.faces(a, "a", aligned=aligned)
        faces_b = self.faces(b, "b", aligned=aligned)
        with self._lock, _unprocessable():
            described = None if aligned else self.detector_options.describe()
            result = compare(self.model, faces_a, faces_b, threshold=threshold, detector=described)
        return result.to_dict()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model and the detector for work that calls them itself (the gallery search); a model-side
        refusal (``ValueError``) becomes a 422."""
        with self._lock, _unprocessable():
            yield

    def health(self) -> dict[str, Any]:
        """The model's name, embedding size, quality method, threshold and card."""
        m = self.model
        return {
            "status": "ok",
            "model": m.name,
            "embedding_dim": m.embedding_dim,
            "quality_method": m.quality_method,
            "threshold": m.threshold,
            "card": m.card.to_dict(),
        }


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
