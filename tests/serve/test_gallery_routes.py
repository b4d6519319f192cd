"""``POST /enroll`` and ``POST /search`` (``qualiface serve --gallery``) on the tiny real model of conftest.py, with
aligned crops: documented shapes, the gallery file appended atomically under a lock, and the error answers."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _helpers.asgi import Answer, call
from _helpers.shared_data import SFACE, need
from qualiface.cli.app import app as cli
from qualiface.gallery import Gallery, GalleryError, load_gallery, save_gallery
from qualiface.serve import FaceService, ServeSettings, create_app
from qualiface.serve.gallery_routes import EnrollAnswer, GalleryService, SearchAnswer
from qualiface.serve.schemas import ErrorAnswer


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _post(app: Any, path: str, body: bytes, query: str = "") -> Answer:
    return call(app, "POST", path, query=query, headers=[("content-length", str(len(body)))], chunks=[body])


def _error(answer: Answer, status: int) -> str:
    assert answer.status == status, answer.body
    return ErrorAnswer.model_validate(answer.json()).error


@pytest.fixture
def gallery_app(service: FaceService, tmp_path: Path):
    galleries = GalleryService(service, tmp_path / "g.npz")
    return create_app(service, ServeSettings(), gallery=galleries), galleries


def test_enroll_appends_to_the_gallery_file_and_search_finds_the_identity(gallery_app, tmp_path: Path) -> None:
    app, _ = gallery_app
    first = EnrollAnswer.model_validate(_post(app, "/enroll", _png(1), "identity=ada&aligned=1").json())
    assert (first.added, first.new_identity, first.gallery.identities, first.gallery.images) == (True, True, 1, 1)
    assert first.quality is not None  # the model's CR-FIQA quality
    _post(app, "/enroll", _png(2), "identity=ada&aligned=1")
    third = EnrollAnswer.model_validate(_post(app, "/enroll", _png(3), "identity=grace&aligned=1").json())
    assert (third.gallery.identities, third.gallery.images) == (2, 3)
    on_disk = load_gallery(tmp_path / "g.npz")
    assert on_disk.identities == ["ada", "grace"]
    assert on_disk.n_images == 3
    again = EnrollAnswer.model_validate(_post(app, "/enroll", _png(3), "identity=grace&aligned=1").json())
    assert again.added is False
    assert again.reason == "already enrolled as 'grace'"
    conflict = _error(_post(app, "/enroll", _png(3), "identity=ada&aligned=1"), 409)
    assert "already enrolled as 'grace', not 'ada'" in conflict

    found = SearchAnswer.model_validate(_post(app, "/search", _png(3), "aligned=1&top_k=2").json())
    (result,) = found.results
    assert [c.identity for c in result.candidates] == ["grace", "ada"]
    assert result.candidates[0].similarity == pytest.approx(1.0, abs=1e-5)  # grace's template is this face
    assert result.decision["decision"] == "undecided"  # the tiny model has no threshold
    decided = SearchAnswer.model_validate(_post(app, "/search", _png(3), "aligned=1&threshold=0.99").json())
    assert decided.results[0].decision["decision"] == "match"
    assert decided.results[0].identity == "grace"
    expected = on_disk.templates @ (on_disk.embeddings[2] / np.linalg.norm(on_disk.embeddings[2]))
    np.testing.assert_allclose(
        sorted((c.similarity for c in result.candidates), reverse=True), sorted(expected, reverse=True), atol=1e-5
    )


def test_concurrent_enrolments_are_all_kept(service: FaceService, tmp_path: Path) -> None:
    galleries = GalleryService(service, tmp_path / "g.npz")
    errors: list[BaseException] = []

    def enroll(i: int) -> None:
        try:
            galleries.enroll(_png(100 + i), f"person {i % 3}", aligned=True)
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = load_gallery(tmp_path / "g.npz")
    assert stored.n_images == 8
    assert sorted(stored.identities) == ["person 0", "person 1", "person 2"]
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # no temporary file left


def test_gallery_requests_are_refused_with_one_line(gallery_app) -> None:
    app, _ = gallery_app
    assert "holds no identity yet" in _error(_post(app, "/search", _png(1), "aligned=1"), 409)
    _post(app, "/enroll", _png(1), "identity=ada&aligned=1")
    assert "top-k must be an integer from 1 to 1000, got 0" in _error(
        _post(app, "/search", _png(1), "aligned=1&top_k=0"), 400
    )
    assert "threshold" in _error(_post(app, "/search", _png(1), "aligned=1&threshold=2"), 400)
    assert "identity" in _error(_post(app, "/enroll", _png(2), "aligned=1"), 400)  # no identity given
    assert "must be 1 to 256 characters" in _error(_post(app, "/enroll", _png(2), "identity=%20&aligned=1"), 400)
    assert "image" in _error(_post(app, "/enroll", b"not an image", "identity=x"), 400)


def test_without_a_gallery_the_endpoints_are_not_served(service: FaceService) -> None:
    app = create_app(service, ServeSettings())
    message = _error(_post(app, "/search", _png(1), "aligned=1"), 404)
    assert "with --gallery POST /enroll and POST /search" in message


def test_the_schema_lists_the_gallery_endpoints(gallery_app) -> None:
    app, _ = gallery_app
    paths = call(app, "GET", "/openapi.json").json()["paths"]
    assert {"/enroll", "/search"} <= set(paths)


def test_a_gallery_of_another_model_is_refused_at_start(service: FaceService, tmp_path: Path) -> None:
    other = Gallery.empty({"model": "other", "model_sha256": "1" * 64, "preprocessing": "p"}, 8, None)
    save_gallery(other, tmp_path / "g.npz")
    with pytest.raises(GalleryError, match="gallery enrolled with model 'other'"):
        GalleryService(service, tmp_path / "g.npz")


def test_serve_with_a_broken_gallery_exits_with_one_line(tmp_path: Path) -> None:
    need(SFACE)
    bad = tmp_path / "g.npz"
    bad.write_bytes(b"not a gallery")
    result = CliRunner().invoke(cli, ["serve", "--model", str(SFACE), "--gallery", str(bad), "--port", "0"])
    assert result.exit_code == 2, result.output
    assert f"error: {bad}: not a gallery file" in result.stderr


def test_search_decides_with_the_learned_threshold_only_when_asked(service: FaceService, tmp_path: Path) -> None:
    from qualiface.models import ThresholdInfo

    card = service.model.card  # the fixture is shared: put its card back afterwards
    service.model.card = card.with_threshold(ThresholdInfo(0.5, "learned", source="unitsface head"))
    try:
        app = create_app(service, ServeSettings(), gallery=GalleryService(service, tmp_path / "g.npz"))
        _post(app, "/enroll", _png(1), "identity=ada&aligned=1")
        plain = SearchAnswer.model_validate(_post(app, "/search", _png(1), "aligned=1").json())
        assert plain.results[0].decision["decision"] == "undecided"  # b/γ never decides unasked
        asked = SearchAnswer.model_validate(_post(app, "/search", _png(1), "aligned=1&threshold=learned").json())
        assert asked.results[0].decision["decision"] == "match"
        assert asked.results[0].decision["threshold"] == pytest.approx(0.5)
        assert "must be a cosine in [-1, 1] or 'learned', got 'banana'" in _error(
            _post(app, "/search", _png(1), "aligned=1&threshold=banana"), 400
        )
    finally:
        service.model.card = card


def test_search_refuses_learned_for_a_model_without_one(gallery_app) -> None:
    app, _ = gallery_app
    _post(app, "/enroll", _png(1), "identity=ada&aligned=1")
    assert "has no learned threshold" in _error(_post(app, "/search", _png(1), "aligned=1&threshold=learned"), 400)
