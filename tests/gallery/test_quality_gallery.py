"""Galleries of a model with a quality score: the templates' weighting through the CLI, and abstention in search.

The model is a qualiface ``model.pt`` (iresnet18 with CR-FIQA's quality branch, random weights, as in
tests/cli/test_use_commands.py): these tests check that the stored qualities weight the templates as documented,
not that the quality is good. The photos are aligned Glint360K crops (``--aligned``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from _helpers.quality_model import write_quality_model
from _helpers.shared_data import GLINT, need
from qualiface.cli.app import app
from qualiface.decisions import DecisionPolicy
from qualiface.gallery import Gallery, add_images, load_gallery, search_embeddings

runner = CliRunner()
PEOPLE = ("Barack_Obama", "Daniel_Radcliffe", "Drew_Barrymore")


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An iresnet18 ``model.pt`` with CR-FIQA's quality branch (random weights; _helpers/quality_model.py)."""
    return write_quality_model(tmp_path_factory.mktemp("model") / "model.pt")


def _templates(gallery: Gallery, weight_of) -> np.ndarray:
    """float64 reference: per identity, the normalised sum of w_i e_i with ``weight_of(rows)`` the weights."""
    out = []
    for j in range(gallery.n_identities):
        rows = np.flatnonzero(gallery.identity == j)
        acc = np.zeros(gallery.embedding_dim)
        for w, i in zip(weight_of(rows), rows, strict=True):
            acc += w * gallery.embeddings[i].astype(np.float64)
        out.append(acc / np.linalg.norm(acc))
    return np.array(out)


def test_cli_templates_are_weighted_by_quality_as_documented(quality_model: Path, tmp_path: Path) -> None:
    need(*(GLINT / "images" / p for p in PEOPLE))
    files = [str(f) for p in PEOPLE for f in sorted((GLINT / "images" / p).glob("*.jpg"))[:3]]
    gallery = tmp_path / "g.npz"
    base = ["--gallery", str(gallery), "--model", str(quality_model), "--aligned", "--no-progress"]
    first = runner.invoke(app, ["enroll", *files, *base])
    assert first.exit_code == 0, first.output
    stored = load_gallery(gallery)
    assert stored.quality_method == "cr_fiqa"
    assert stored.quality_scale == "gallery"  # the model has no calibrated quality scale
    q = stored.quality.astype(np.float64)
    assert np.isfinite(q).all()
    lo, hi = q.min(), q.max()
    softmax = _templates(stored, lambda rows: [math.exp((q[i] - lo) / (hi - lo) / 0.25) for i in rows])
    np.testing.assert_allclose(stored.templates, softmax, atol=2e-6)

    second = runner.invoke(app, ["enroll", *files[:1], *base, "--quality-weight", "minmax"])
    assert second.exit_code == 0, second.output
    assert "templates recomputed with weighting quality (minmax)" in second.stderr
    stored = load_gallery(gallery)

    def minmax(rows):
        low, high = q[rows].min(), q[rows].max()
        return [(q[i] - low) / (high - low) for i in rows]

    np.testing.assert_allclose(stored.templates, _templates(stored, minmax), atol=2e-6)
    third = runner.invoke(app, ["enroll", *files[:1], *base, "--weighting", "uniform"])
    assert third.exit_code == 0, third.output
    np.testing.assert_allclose(load_gallery(gallery).templates, _templates(stored, lambda r: [1.0] * len(r)), atol=2e-6)
    bad = runner.invoke(app, ["enroll", *files[:1], *base, "--weighting", "best"])
    assert bad.exit_code == 2
    assert "error: weighting: unknown method 'best'" in bad.stderr


def test_search_abstains_below_the_quality_floor_and_names_no_identity() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(4, 16))
    report = add_images(
        Gallery.empty({"model": "m", "model_sha256": "a" * 64, "preprocessing": "p"}, 16, "cr_fiqa"),
        embeddings,
        np.array([1.0, 2.0, 1.5, 1.2]),
        ["a", "a", "b", "b"],
        ["1", "2", "3", "4"],
        [bytes([i]) * 32 for i in range(4)],
    )
    policy = DecisionPolicy(
        threshold=0.3, threshold_source="argument", quality_floor=1.0, quality_floor_source="test floor"
    )
    probes = report.gallery.templates[[0, 0]] + 0.01  # near identity a's template
    results = search_embeddings(report.gallery, probes, np.array([0.5, 2.0]), policy, k=2)
    poor, good = results
    assert poor.decision["decision"] == "abstain"
    assert poor.identity is None
    assert "probe: quality 0.5 is below the floor 1 (test floor)" in poor.decision["reasons"][0]
    assert poor.candidates[0].identity == "a"  # the candidates are still listed
    assert good.decision["decision"] == "match"
    assert good.identity == "a"
    assert good.quality == 2.0
