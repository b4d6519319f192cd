"""Enrolment: faces with identities into a gallery (new or existing), templates recomputed from every image.

Each enrolled image keeps its unit embedding, its raw quality and the SHA-256 of its bytes, so the templates can
be recomputed (another weighting, more images) and the gallery appended to. The same image (same bytes, whatever
its name) is enrolled once: enrolling it again under the same identity skips it (reported), under another
identity is refused (one line naming the file and both identities), as is a model other than the gallery's
(:func:`~qualiface.gallery.store.check_model`). A model without a quality score gets uniform templates.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.detect.faces import FaceSet
from qualiface.errors import InputError
from qualiface.gallery.store import Gallery, check_model, utc_now
from qualiface.gallery.templates import Weighting, image_weights, pool_templates, unit_quality, unit_rows

#: Longest identity name accepted.
MAX_IDENTITY_CHARS = 256
#: Maps raw qualities to the model's calibrated 0-100 scale (``None`` when the model has none).
QualityScaler = Callable[[np.ndarray], np.ndarray | None]


class EnrollConflictError(InputError):
    """An image already enrolled under another identity."""


@dataclass
class EnrollReport:
    """What an enrolment did: the new gallery, the images added and skipped, and notes for people."""

    gallery: Gallery
    added: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    new_identities: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def model_scaler(model: Any) -> QualityScaler:
    """The model's calibrated 0-100 quality scale as a :data:`QualityScaler` (:mod:`qualiface.decisions`)."""
    from qualiface.decisions import DecisionPolicy, scaled_qualities

    policy = DecisionPolicy.from_model(model)
    return lambda raw: scaled_qualities(policy, raw)


def file_digest(path: str | Path) -> bytes:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def check_identity(name: str, where: str) -> str:
    """An identity name, stripped; :class:`InputError` naming ``where`` when empty, too long or multi-line."""
    value = name.strip()
    if not value or len(value) > MAX_IDENTITY_CHARS or any(c in value for c in "\r\n\0"):
        raise InputError(f"{where}: identity {name[:80]!r} must be 1 to {MAX_IDENTITY_CHARS} characters on one line")
    return value


def rebuild_templates(gallery: Gallery, scale: QualityScaler | None = None) -> Gallery:
    """``gallery`` with its templates recomputed from every image under its weighting (module docstring of
    :mod:`qualiface.gallery.templates`); ``scale`` is the model's 0-100 quality scale for the softmax weighting."""
    quality = gallery.quality.astype(np.float64) if gallery.quality_method is not None else None
    unit, source = None, None
    if quality is not None and gallery.weighting.method == "quality" and gallery.weighting.transform == "softmax":
        scaled = scale(quality) if scale is not None and quality.size else None
        unit = unit_quality(quality, scaled)
        source = "model" if scaled is not None else "gallery"
    weights = image_weights(quality, gallery.identity, gallery.n_identities, gallery.weighting, unit)
    templates = pool_templates(gallery.embeddings, gallery.identity, gallery.n_identities, weights)
    return dataclasses.replace(gallery, templates=templates, quality_scale=source)


def add_images(
    gallery: Gallery,
    embeddings: np.ndarray,
    quality: np.ndarray | None,
    identities: Sequence[str],
    files: Sequence[str],
    digests: Sequence[bytes],
    *,
    weighting: Weighting | None = None,
    scale: QualityScaler | None = None,
) -> EnrollReport:
    """A new gallery: ``gallery`` plus these images (one row of ``embeddings`` each, raw or unit), templates
    recomputed; ``gallery`` itself is not changed. ``weighting`` replaces the gallery's when given."""
    n = embeddings.shape[0]
    if not len(identities) == len(files) == len(digests) == n:
        raise ValueError("embeddings, identities, files and digests must have one entry per image")
    if quality is not None and quality.shape != (n,):
        raise ValueError(f"quality must have one value per image ({n}), got shape {quality.shape}")
    notes: list[str] = []
    if weighting is not None and weighting != gallery.weighting:
        if gallery.n_images:
            notes.append(
                f"templates recomputed with weighting {weighting.describe()} (was {gallery.weighting.describe()})"
            )
        gallery = dataclasses.replace(gallery, weighting=weighting)
    if gallery.quality_method is None and gallery.weighting.method != "uniform":
        notes.append(f"the model {gallery.model.get('model')} gives no quality score: templates are uniform means")
        gallery = dataclasses.replace(gallery, weighting=Weighting("uniform"))
    known = {bytes(d): gallery.identities[i] for d, i in zip(gallery.content_sha256, gallery.identity, strict=True)}
    rows = {name: i for i, name in enumerate(gallery.identities)}
    report = EnrollReport(gallery=gallery, notes=notes)
    keep: list[int] = []
    identity_rows: list[int] = []
    for i in range(n):
        name = check_identity(identities[i], files[i])
        digest = bytes(digests[i])
        if digest in known:
            if known[digest] != name:
                raise EnrollConflictError(
                    f"{files[i]}: this image is already enrolled as {known[digest]!r}, not {name!r} "
                    "(the same image under two identities)"
                )
            report.skipped.append((files[i], f"already enrolled as {name!r}"))
            continue
        known[digest] = name
        if name not in rows:
            rows[name] = len(rows)
            report.new_identities.append(name)
        keep.append(i)
        identity_rows.append(rows[name])
        report.added.append((files[i], name))
    take = np.asarray(keep, np.int64)
    new_quality = np.full(take.size, np.nan, np.float32) if quality is None else np.asarray(quality, np.float32)[take]
    unit = unit_rows(np.asarray(embeddings)[take], "embeddings") if take.size else embeddings[:0]
    grown = dataclasses.replace(
        gallery,
        identities=[*gallery.identities, *report.new_identities],
        files=[*gallery.files, *(files[i] for i in keep)],
        embeddings=np.concatenate([gallery.embeddings, np.asarray(unit, np.float32)]),
        quality=np.concatenate([gallery.quality, new_quality]),
        identity=np.concatenate([gallery.identity, np.asarray(identity_rows, np.int64)]),
        content_sha256=np.concatenate(
            [gallery.content_sha256, np.frombuffer(b"".join(bytes(digests[i]) for i in keep), np.uint8).reshape(-1, 32)]
        ),
        updated=utc_now(),
    )
    report.gallery = rebuild_templates(grown, scale) if grown.n_images else grown
    return report


def enroll(
    model: Any,
    faces: FaceSet,
    identities: Sequence[str],
    *,
    gallery: Gallery | None = None,
    weighting: Weighting | None = None,
    digests: Sequence[bytes] | None = None,
    detector: dict[str, Any] | None = None,
    where: str = "gallery",
) -> EnrollReport:
    """Embed ``faces`` with ``model`` and add them to ``gallery`` (a new one when ``None``).

    Args:
        model: a loaded :class:`~qualiface.models.FaceModel`.
        faces: one face per image (:func:`qualiface.use.load_faces`).
        identities: the identity of each face (``faces.sources`` order).
        gallery: the gallery to append to; its model must be ``model`` (else :class:`~qualiface.gallery.store.
            GalleryError`).
        weighting: the template weighting; default the gallery's (a new gallery's: quality, softmax, 0.25).
        digests: SHA-256 of each face's image bytes; default each source file's.
        detector: the detector settings, recorded in a new gallery.
        where: how errors name the gallery (its file).
    """
    from qualiface.use import embed_faces

    stamp = model.card.stamp()
    if gallery is None:
        gallery = Gallery.empty(stamp, model.embedding_dim, model.quality_method)
        gallery.detector = detector
    else:
        check_model(gallery, stamp, where)
    if len(identities) != len(faces):
        raise ValueError(f"{len(identities)} identities for {len(faces)} faces")
    files = [str(path) for path, _ in faces.sources]
    if digests is None:
        cache: dict[str, bytes] = {}
        digests = [cache.setdefault(f, file_digest(f)) if f not in cache else cache[f] for f in files]
    embeddings, quality = embed_faces(model, faces)
    return add_images(
        gallery,
        embeddings,
        quality,
        identities,
        files,
        digests,
        weighting=weighting,
        scale=model_scaler(model) if model.quality_method is not None else None,
    )
