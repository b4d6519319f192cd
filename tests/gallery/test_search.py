"""Exact top-k search (blocks of probes and templates) and the FAISS indexes against a float64 brute force."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from qualiface.errors import InputError
from qualiface.gallery import FaissIndex, top_k
from qualiface.gallery import search as search_module


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference(probes: np.ndarray, templates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = probes.astype(np.float64) @ templates.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("block_bytes", [64 << 20, 4 * 3 * 17])  # one block; blocks of 17 templates x 3 probes
def test_top_k_equals_a_float64_brute_force(block_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    probes, templates = _unit(rng, 7, 24), _unit(rng, 301, 24)
    monkeypatch.setattr(search_module, "PROBE_BLOCK", 3)
    scores, indices = top_k(probes, templates, 5, block_bytes=block_bytes)
    ref_scores, ref_indices = _reference(probes, templates, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    assert scores.dtype == np.float32
    assert indices.dtype == np.int64


def test_top_k_larger_than_the_gallery_returns_every_template_sorted() -> None:
    rng = np.random.default_rng(1)
    probes, templates = _unit(rng, 2, 8), _unit(rng, 3, 8)
    _, indices = top_k(probes, templates, 10)
    assert indices.shape == (2, 3)
    np.testing.assert_array_equal(indices, _reference(probes, templates, 3)[1])


def test_equal_scores_are_ordered_by_template_row() -> None:
    templates = np.eye(4, dtype=np.float32)[[0, 1, 0, 1, 2]]  # rows 0 and 2, 1 and 3 are the same template
    probe = np.array([[0.8, 0.6, 0.0, 0.0]], np.float32)
    _, indices = top_k(probe, templates, 4)
    np.testing.assert_array_equal(indices, [[0, 2, 1, 3]])


def test_faiss_flat_index_gives_the_exact_candidates() -> None:
    pytest.importorskip("faiss", reason="faiss-cpu not installed: pip install 'qualiface[faiss]'")
    rng = np.random.default_rng(2)
    probes, templates = _unit(rng, 9, 32), _unit(rng, 500, 32)
    scores, indices = FaissIndex(templates, "faiss").search(probes, 5)
    ref_scores, ref_indices = _reference(probes, templates, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_faiss_hnsw_index_finds_the_nearest_template_of_near_duplicates() -> None:
    pytest.importorskip("faiss", reason="faiss-cpu not installed: pip install 'qualiface[faiss]'")
    rng = np.random.default_rng(3)
    templates = _unit(rng, 2000, 32)
    noisy = templates[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    probes = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    _, indices = FaissIndex(templates, "faiss-hnsw").search(probes, 3)
    assert (indices[:, 0] == np.arange(50)).mean() >= 0.98


def test_faiss_missing_is_one_line_saying_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(InputError, match=r"pip install 'qualiface\[faiss\]'"):
        FaissIndex(np.eye(3, dtype=np.float32))
