"""The gallery file: ``qualiface.gallery/1``, an uncompressed ``.npz`` read without pickle and within bounds.

Members (every one a plain ``.npy`` array, ``np.savez`` layout, stored without compression):

- ``header``: ``uint8``, the UTF-8 JSON header: ``format``, ``model`` (the model card's stamp: name, format,
  weights SHA-256, preprocessing), ``embedding_dim``, ``quality_method``, ``weighting``
  (:class:`~qualiface.gallery.templates.Weighting`), ``quality_scale`` (what put the qualities on [0, 1] for the
  softmax weighting: ``"model"``, the model's calibrated 0-100 scale, or ``"gallery"``, the range of the
  gallery's images), ``identities``
  (names, template order), ``files`` (each image's file as given), ``detector`` (the settings faces were found
  with), ``created`` / ``updated`` (UTC, ISO 8601), ``model_file`` (the model's file or run directory as
  enrolled, absolute; ``qualiface search`` uses it when no ``--model`` is given, after checking its SHA-256;
  optional, ``null`` when unknown).
- ``embeddings``: ``(N, D)`` ``float32`` unit embeddings, one row per enrolled image.
- ``quality``: ``(N,)`` ``float32``, the model's raw quality per image (``NaN`` for a model without one).
- ``identity``: ``(N,)`` ``int64``, each image's row in ``identities``.
- ``content_sha256``: ``(N, 32)`` ``uint8``, the SHA-256 of each image file's bytes (the same photo is enrolled
  once, whatever its name).
- ``templates``: ``(K, D)`` ``float32``, one unit template per identity (:mod:`qualiface.gallery.templates`).

Reading (:func:`load_gallery`) opens the archive with :mod:`zipfile`, never ``pickle``: only these members,
stored (not compressed) so that no member claims more bytes than the file holds; each ``.npy`` header is read and
checked (dtype, shape against the JSON header's counts, byte count) before any array is allocated, so a hostile
file claiming a huge size costs nothing. The file is written atomically (:func:`qualiface.atomic.atomic_path`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from qualiface.atomic import atomic_path
from qualiface.errors import InputError
from qualiface.gallery.templates import Weighting

GALLERY_FORMAT = "qualiface.gallery/1"
#: Largest embedding size read from a gallery file.
MAX_EMBEDDING_DIM = 1 << 16
#: Largest JSON header read from a gallery file (bytes).
MAX_HEADER_BYTES = 1 << 30
#: The arrays of a gallery file: dtype and shape (``"N"`` images, ``"K"`` identities, ``"D"`` embedding size).
_ARRAYS: dict[str, tuple[str, tuple[int | str, ...]]] = {
    "embeddings": ("<f4", ("N", "D")),
    "quality": ("<f4", ("N",)),
    "identity": ("<i8", ("N",)),
    "content_sha256": ("|u1", ("N", 32)),
    "templates": ("<f4", ("K", "D")),
}


class GalleryError(InputError):
    """A gallery file that cannot be used: the message names the file and what is wrong with it."""


@dataclass
class Gallery:
    """A gallery in memory (module docstring for the fields' meaning); build it with
    :func:`qualiface.gallery.enroll` and write it with :func:`save_gallery`."""

    model: dict[str, Any]
    embedding_dim: int
    quality_method: str | None
    weighting: Weighting
    identities: list[str]
    files: list[str]
    embeddings: np.ndarray
    quality: np.ndarray
    identity: np.ndarray
    content_sha256: np.ndarray
    templates: np.ndarray
    quality_scale: str | None = None
    detector: dict[str, Any] | None = None
    created: str = ""
    updated: str = ""
    model_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, model: dict[str, Any], embedding_dim: int, quality_method: str | None) -> Gallery:
        """A gallery without images for the model whose card stamp is ``model``."""
        now = utc_now()
        return cls(
            model=dict(model),
            embedding_dim=int(embedding_dim),
            quality_method=quality_method,
            weighting=Weighting(),
            identities=[],
            files=[],
            embeddings=np.zeros((0, embedding_dim), np.float32),
            quality=np.zeros(0, np.float32),
            identity=np.zeros(0, np.int64),
            content_sha256=np.zeros((0, 32), np.uint8),
            templates=np.zeros((0, embedding_dim), np.float32),
            created=now,
            updated=now,
        )

    @property
    def n_images(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def n_identities(self) -> int:
        return len(self.identities)

    def images_per_identity(self) -> np.ndarray:
        """``(K,)`` number of enrolled images of each identity."""
        counts: np.ndarray = np.bincount(self.identity, minlength=self.n_identities)
        return counts

    def header(self) -> dict[str, Any]:
        """The JSON header (module docstring)."""
        return {
            "format": GALLERY_FORMAT,
            "model": self.model,
            "embedding_dim": self.embedding_dim,
            "quality_method": self.quality_method,
            "weighting": self.weighting.to_dict(),
            "quality_scale": self.quality_scale,
            "detector": self.detector,
            "created": self.created,
            "updated": self.updated,
            "model_file": self.model_file,
            "counts": {"images": self.n_images, "identities": self.n_identities},
            "identities": self.identities,
            "files": self.files,
        }

    def summary(self) -> str:
        """One line: identities, images, model, weighting."""
        return (
            f"{self.n_identities} identities, {self.n_images} images, model {self.model.get('model')}, "
            f"templates {self.weighting.describe()}"
        )


def check_model(gallery: Gallery, stamp: dict[str, Any], where: str | os.PathLike[str]) -> None:
    """Refuse (:class:`GalleryError`, one line naming ``where``) a model other than the gallery's: the weights'
    SHA-256 (the name when neither knows it) and the preprocessing must agree, or the embeddings are not
    comparable."""
    mine, theirs = gallery.model, stamp
    same_weights = (
        mine.get("model_sha256") == theirs.get("model_sha256")
        if mine.get("model_sha256") or theirs.get("model_sha256")
        else mine.get("model") == theirs.get("model")
    )
    if not same_weights:
        raise GalleryError(
            f"{where}: gallery enrolled with model {mine.get('model')!r} (sha256 {_short(mine.get('model_sha256'))}), "
            f"not {theirs.get('model')!r} (sha256 {_short(theirs.get('model_sha256'))}); embeddings of different "
            "models are not comparable: use the gallery's model or enroll into a new gallery"
        )
    if mine.get("preprocessing") != theirs.get("preprocessing"):
        raise GalleryError(
            f"{where}: gallery enrolled with preprocessing {mine.get('preprocessing')!r}, the model now uses "
            f"{theirs.get('preprocessing')!r}; use the same --preprocessing as at enrolment"
        )


def _short(sha: Any) -> str:
    return f"{sha[:16]}..." if isinstance(sha, str) else "unknown"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def save_gallery(gallery: Gallery, path: str | os.PathLike[str]) -> Path:
    """Write ``gallery`` to ``path`` atomically (a reader sees the old file or the new one); returns the path.
    The folder is created when missing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_consistent(gallery, str(target))
    header = json.dumps(gallery.header(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    arrays = {
        "header": np.frombuffer(header, np.uint8),
        "embeddings": np.ascontiguousarray(gallery.embeddings, np.float32),
        "quality": np.ascontiguousarray(gallery.quality, np.float32),
        "identity": np.ascontiguousarray(gallery.identity, np.int64),
        "content_sha256": np.ascontiguousarray(gallery.content_sha256, np.uint8),
        "templates": np.ascontiguousarray(gallery.templates, np.float32),
    }
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **arrays to allow_pickle too
    return target


def load_gallery(path: str | os.PathLike[str]) -> Gallery:
    """Read a gallery file (module docstring); :class:`GalleryError` naming the file for anything that is not a
    well-formed ``qualiface.gallery/1`` file, ``FileNotFoundError`` when it is missing."""
    source = Path(path)
    where = str(source)
    if source.is_dir():
        raise GalleryError(f"{source}: is a folder; a gallery is a file (e.g. gallery.npz)")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such gallery file")
    size = source.stat().st_size
    try:
        with zipfile.ZipFile(source) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            expected = {"header.npy", *(f"{name}.npy" for name in _ARRAYS)}
            if set(infos) != expected:
                unknown = sorted(set(infos) - expected)[:3]
                missing = sorted(expected - set(infos))[:3]
                raise GalleryError(
                    f"{where}: not a {GALLERY_FORMAT} file (members missing: {missing or 'none'}, "
                    f"unexpected: {unknown or 'none'})"
                )
            for info in infos.values():
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise GalleryError(f"{where}: member {info.filename} is compressed or larger than the file")
            header_bytes = _read_array(archive, infos["header.npy"], "|u1", None, where).tobytes()
            header = _parse_header(header_bytes, where)
            counts = {"N": len(header["files"]), "K": len(header["identities"]), "D": header["embedding_dim"]}
            arrays = {
                name: _read_array(archive, infos[f"{name}.npy"], dtype, _shape(shape, counts), where)
                for name, (dtype, shape) in _ARRAYS.items()
            }
    except zipfile.BadZipFile as exc:
        raise GalleryError(f"{where}: not a gallery file (not a .npz archive: {exc})") from None
    try:
        weighting = Weighting.from_dict(header["weighting"], where=f"{where}: weighting")
    except InputError as exc:
        raise GalleryError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
    gallery = Gallery(
        model=header["model"],
        embedding_dim=header["embedding_dim"],
        quality_method=header["quality_method"],
        weighting=weighting,
        identities=header["identities"],
        files=header["files"],
        embeddings=arrays["embeddings"],
        quality=arrays["quality"],
        identity=arrays["identity"],
        content_sha256=arrays["content_sha256"],
        templates=arrays["templates"],
        quality_scale=header["quality_scale"],
        detector=header["detector"],
        created=header["created"],
        updated=header["updated"],
        model_file=header.get("model_file"),
    )
    _check_consistent(gallery, where)
    return gallery


def _shape(spec: tuple[int | str, ...], counts: dict[str, int]) -> tuple[int, ...]:
    return tuple(counts[s] if isinstance(s, str) else s for s in spec)


def _read_array(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: str, shape: tuple[int, ...] | None, where: str
) -> np.ndarray:
    """One member's array, its ``.npy`` header checked before anything is allocated: the dtype, the shape
    (``None``: any 1-D), and a byte count equal to what the member holds."""
    name = info.filename
    with archive.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format version {version}")
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            got_shape, fortran, got_dtype = read_header(fh)
        except ValueError as exc:
            raise GalleryError(f"{where}: member {name} is not a .npy array ({exc})") from None
        if got_dtype.str != dtype or got_dtype.hasobject:
            raise GalleryError(f"{where}: member {name} has dtype {got_dtype.str}, expected {dtype}")
        if shape is None:
            if len(got_shape) != 1:
                raise GalleryError(f"{where}: member {name} has shape {got_shape}, expected one dimension")
        elif tuple(got_shape) != shape:
            raise GalleryError(f"{where}: member {name} has shape {tuple(got_shape)}, expected {shape}")
        count = int(np.prod(got_shape, dtype=object))
        nbytes = count * got_dtype.itemsize
        if nbytes != info.file_size - fh.tell():
            raise GalleryError(
                f"{where}: member {name} claims {nbytes} bytes of data for shape {tuple(got_shape)}, "
                f"the file holds {info.file_size - fh.tell()}"
            )
        data = _read_exact(fh, nbytes, where, name)
    array = np.frombuffer(data, dtype=got_dtype)  # backed by the bytearray: writable, no second copy
    return array.reshape(got_shape, order="F" if fortran else "C")


def _read_exact(fh: IO[bytes], nbytes: int, where: str, name: str) -> bytearray:
    out = bytearray(nbytes)
    view = memoryview(out)
    got = 0
    while got < nbytes:
        n = fh.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise GalleryError(f"{where}: member {name} ends after {got} of {nbytes} bytes")
        got += n
    return out


def _parse_header(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_HEADER_BYTES:
        raise GalleryError(f"{where}: header of {len(data)} bytes, more than the {MAX_HEADER_BYTES} read")
    try:
        header = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GalleryError(f"{where}: header is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise GalleryError(f"{where}: header is not a JSON object")
    if header.get("format") != GALLERY_FORMAT:
        raise GalleryError(f"{where}: format {str(header.get('format'))[:80]!r}, expected {GALLERY_FORMAT!r}")
    keys = ("model", "embedding_dim", "quality_method", "weighting", "quality_scale")
    for key in (*keys, "detector", "created", "updated", "identities", "files"):
        if key not in header:
            raise GalleryError(f"{where}: header has no {key!r}")
    dim = header["embedding_dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= MAX_EMBEDDING_DIM:
        raise GalleryError(f"{where}: embedding_dim must be an integer in [1, {MAX_EMBEDDING_DIM}], got {dim!r}")
    model = header["model"]
    if not isinstance(model, dict) or not all(isinstance(v, str | None) for v in model.values()):
        raise GalleryError(f"{where}: header 'model' must be the model card's stamp (an object of strings)")
    for key in ("identities", "files"):
        values = header[key]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise GalleryError(f"{where}: header {key!r} must be a list of strings")
    if len(set(header["identities"])) != len(header["identities"]):
        raise GalleryError(f"{where}: header 'identities' names an identity twice")
    for key in ("quality_method", "quality_scale", "created", "updated"):
        if header[key] is not None and not isinstance(header[key], str):
            raise GalleryError(f"{where}: header {key!r} must be a string")
    if header.get("model_file") is not None and not isinstance(header["model_file"], str):
        raise GalleryError(f"{where}: header 'model_file' must be a string or null")
    if header["detector"] is not None and not isinstance(header["detector"], dict):
        raise GalleryError(f"{where}: header 'detector' must be an object or null")
    return header


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _check_consistent(gallery: Gallery, where: str) -> None:
    """The arrays agree with each other: identity indices in range, every identity with an image, finite unit
    rows."""
    n, k = gallery.n_images, gallery.n_identities
    if gallery.identity.shape != (n,) or len(gallery.files) != n or gallery.quality.shape != (n,):
        raise GalleryError(f"{where}: the per-image arrays disagree on the number of images")
    if gallery.templates.shape != (k, gallery.embedding_dim):
        expected = (k, gallery.embedding_dim)
        raise GalleryError(f"{where}: templates of shape {gallery.templates.shape}, expected {expected}")
    if n and (gallery.identity.min() < 0 or gallery.identity.max() >= k):
        raise GalleryError(f"{where}: an image's identity index is outside the {k} identities")
    if k and (np.bincount(gallery.identity, minlength=k) == 0).any():
        raise GalleryError(f"{where}: an identity has no image")
    for name in ("embeddings", "templates"):
        rows = getattr(gallery, name)
        for start in range(0, rows.shape[0], 65536):  # blocks: bounded temporary memory
            block = rows[start : start + 65536]
            norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            if not np.isfinite(norms).all():
                raise GalleryError(f"{where}: {name} hold NaN or infinite values")
            if np.abs(norms - 1.0).max() > 1e-3:
                raise GalleryError(f"{where}: {name} are not unit vectors")
