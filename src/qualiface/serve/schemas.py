"""The JSON shapes of the server: the ``/verify`` request, every answer and the error form (pydantic models).

They document the API in ``/openapi.json`` and parse the ``/verify`` body; the answers themselves are built by
:class:`~qualiface.serve.service.FaceService` as dictionaries of these shapes (the tests check them against the
models) and written with ``allow_nan=False``. Keys shown as optional are left out of an answer when they do not
apply (``box`` and ``score`` of an aligned crop, ``quality`` of a model without one).
"""

from __future__ import annotations

import base64
import binascii
import json
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from qualiface.decisions import LEARNED, ThresholdChoice
from qualiface.models.card import check_threshold
from qualiface.serve.service import RequestError


class ErrorAnswer(BaseModel):
    """Every refusal: 400 bad input, 401 no or wrong API key, 404 unknown path, 405 wrong method, 408 body too
    slow, 413 body too large, 422 no face, 503 busy (with ``Retry-After``), 500 a server fault."""

    error: str = Field(description="one line saying what was refused and why")


class ModelStamp(BaseModel):
    """What every answer carries about the model that made it."""

    model: str
    model_format: str
    model_sha256: str | None
    preprocessing: str


class Face(BaseModel):
    """One face of an image."""

    face_index: int = Field(description="the detection's index in the image (0 for an aligned crop)")
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2] in pixels; absent for an aligned crop")
    score: float | None = Field(None, description="the detector's score; absent for an aligned crop")
    embedding: list[float] | None = Field(None, description="the raw embedding (/embed only)")
    quality: float | None = Field(None, description="the face's quality; absent when the model has none (/embed)")


class EmbedAnswer(BaseModel):
    model: ModelStamp
    faces: list[Face]


class QualityAnswer(BaseModel):
    method: str
    source: str
    model: ModelStamp
    faces: list[Face]


class HealthAnswer(BaseModel):
    status: str
    model: str
    embedding_dim: int
    quality_method: str | None
    threshold: float | None
    card: dict[str, Any]


class VerifyAnswer(BaseModel):
    """:class:`qualiface.use.Comparison` (docs/decisions.md, 'The answer of verify')."""

    verified: bool | None = Field(description="true: match, false: non-match, null: abstained or no threshold")
    decision: Literal["match", "non-match", "abstain", "undecided"]
    similarity: float = Field(description="cosine of the two raw embeddings")
    distance: float = Field(description="1 - similarity (deepface's cosine distance)")
    threshold: float | None
    threshold_source: str | None
    confidence: float | None = Field(description="P(same person | similarity) from the model's calibration")
    reasons: list[str] = Field(description="why it abstained or is undecided")
    confidence_prior: float | None
    quality: dict[str, Any] = Field(description="method, source, floor; per face a/b the raw and 0-100 scores")
    faces: dict[str, Any] = Field(description="per face a/b: box, landmarks, detection score (null: aligned crops)")
    detector: dict[str, Any] | None
    model: ModelStamp
    policy: dict[str, Any] = Field(description="the threshold, floor, uncertainty bound and prior used")
    warnings: list[str]
    match: bool | None
    quality_a: float | None
    quality_b: float | None
    quality_method: str | None


class VerifyRequest(BaseModel):
    """The body of ``POST /verify``; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    a: StrictStr = Field(description="the first image, base64-encoded")
    b: StrictStr = Field(description="the second image, base64-encoded")
    threshold: float | Literal["learned"] | None = Field(
        None,
        description="a cosine threshold in [-1, 1], or 'learned' for the model's threshold learned in training "
        "(UniTSFace); default: the model's calibrated one (without one, no decision)",
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _number_or_learned(cls, value: Any) -> Any:
        """A JSON number or the string ``learned`` as it is (no string read as a number, no boolean)."""
        if value is None or value == LEARNED or (isinstance(value, int | float) and not isinstance(value, bool)):
            return value
        raise ValueError(f"expected a number or {LEARNED!r}")


#: The answers each endpoint may give besides 200, for the OpenAPI schema.
ERROR_ANSWERS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer, "description": HTTPStatus(status).phrase} for status in (400, 401, 413, 422, 503)
}


def parse_verify(body: bytes) -> tuple[bytes, bytes, ThresholdChoice]:
    """The two images and the threshold (a cosine, ``"learned"`` or ``None``) of a ``/verify`` body;
    :class:`RequestError` 400 naming the field."""
    try:
        # Python's json reads NaN, Infinity and -Infinity; they reach the threshold check, which names the field
        raw = json.loads(body) if body else {}
    except (ValueError, RecursionError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({_one_line(exc)})") from None
    try:
        request = VerifyRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, _describe(exc)) from None
    threshold: ThresholdChoice = request.threshold
    if isinstance(request.threshold, float):
        try:
            threshold = check_threshold(request.threshold, "field 'threshold'")
        except ValueError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    return _base64(request.a, "a"), _base64(request.b, "b"), threshold


def _base64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"field {field!r}: not valid base64 ({exc})") from None


def _describe(exc: ValidationError) -> str:
    """``field 'a': Field required; ...`` (or ``body: ...`` when the body is not an object)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"field {where!r}: {error['msg']}" if where else f"body: {error['msg']}")
    return "; ".join(parts)


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:200] or type(exc).__name__
