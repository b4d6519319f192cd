"""Template weighting and pooling against independent float64 references written from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qualiface.errors import InputError
from qualiface.gallery.templates import Weighting, image_weights, pool_templates, unit_quality


def _data(seed: int = 0, n: int = 23, k: int = 5, dim: int = 8):
    rng = np.random.default_rng(seed)
    identity = np.r_[np.arange(k), rng.integers(0, k, n - k)]  # every identity has an image
    emb = rng.normal(size=(n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    quality = rng.uniform(0.2, 2.5, n)
    return emb.astype(np.float32), quality, identity, k


def _reference_templates(emb, identity, k, weight_of):
    """Loop per identity: t = sum w_i e_i / |sum w_i e_i|, float64, with ``weight_of(rows)`` the weights."""
    out = []
    for j in range(k):
        rows = np.flatnonzero(identity == j)
        w = weight_of(rows)
        acc = sum(float(wi) * emb[i].astype(np.float64) for wi, i in zip(w, rows, strict=True))
        out.append(acc / math.sqrt(float(np.dot(acc, acc))))
    return np.array(out)


def test_softmax_weighting_is_exp_of_the_unit_quality_over_the_temperature() -> None:
    emb, q, identity, k = _data()
    tau = 0.3
    lo, hi = q.min(), q.max()

    def ref(rows):
        return [math.exp(((q[i] - lo) / (hi - lo)) / tau) for i in rows]

    w = image_weights(q, identity, k, Weighting("quality", "softmax", tau))
    got = pool_templates(emb, identity, k, w)
    np.testing.assert_allclose(got, _reference_templates(emb, identity, k, ref), atol=2e-6)
    # within an identity the weights' ratios are exp(delta u / tau), whatever the identity's best
    rows = np.flatnonzero(identity == 0)
    u = (q[rows] - lo) / (hi - lo)
    np.testing.assert_allclose(w[rows] / w[rows].sum(), np.exp(u / tau) / np.exp(u / tau).sum(), rtol=1e-12)


def test_softmax_weights_do_not_depend_on_the_quality_units() -> None:
    emb, q, identity, k = _data(1)
    weighting = Weighting()
    a = pool_templates(emb, identity, k, image_weights(q, identity, k, weighting))
    b = pool_templates(emb, identity, k, image_weights(37.0 * q - 5.0, identity, k, weighting))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_softmax_uses_the_model_scale_when_given() -> None:
    emb, q, identity, k = _data(2)
    scaled = np.linspace(3.0, 97.0, q.size)
    unit = unit_quality(q, scaled)
    np.testing.assert_allclose(unit, scaled / 100.0)
    w = image_weights(q, identity, k, Weighting(temperature=0.5), unit)
    ref = _reference_templates(emb, identity, k, lambda rows: [math.exp(scaled[i] / 100.0 / 0.5) for i in rows])
    np.testing.assert_allclose(pool_templates(emb, identity, k, w), ref, atol=2e-6)


def test_minmax_weighting_spans_each_identity_and_is_uniform_for_equal_qualities() -> None:
    emb, q, identity, k = _data(3)
    q[identity == 4] = 1.0  # one identity whose images share a quality

    def ref(rows):
        lo, hi = q[rows].min(), q[rows].max()
        return [1.0 if hi == lo else (q[i] - lo) / (hi - lo) for i in rows]

    w = image_weights(q, identity, k, Weighting("quality", "minmax"))
    ref_templates = _reference_templates(emb, identity, k, ref)
    np.testing.assert_allclose(pool_templates(emb, identity, k, w), ref_templates, atol=2e-6)
    assert (w[identity == 4] == 1.0).all()


def test_linear_weighting_uses_the_quality_and_refuses_a_negative_one() -> None:
    emb, q, identity, k = _data(4)
    w = image_weights(q, identity, k, Weighting("quality", "linear"))
    ref = _reference_templates(emb, identity, k, lambda rows: [q[i] for i in rows])
    np.testing.assert_allclose(pool_templates(emb, identity, k, w), ref, atol=2e-6)
    with pytest.raises(InputError, match="non-negative quality; image 3 has -1"):
        image_weights(np.where(np.arange(q.size) == 3, -1.0, q), identity, k, Weighting("quality", "linear"))


def test_uniform_weighting_and_a_model_without_quality_give_the_plain_mean() -> None:
    emb, q, identity, k = _data(5)
    ref = _reference_templates(emb, identity, k, lambda rows: [1.0] * len(rows))
    for w in (image_weights(q, identity, k, Weighting("uniform")), image_weights(None, identity, k, Weighting())):
        np.testing.assert_allclose(pool_templates(emb, identity, k, w), ref, atol=2e-6)


def test_pooling_in_blocks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import qualiface.gallery.templates as templates

    emb, q, identity, k = _data(6, n=50)
    w = image_weights(q, identity, k, Weighting())
    whole = pool_templates(emb, identity, k, w)
    monkeypatch.setattr(templates, "_BLOCK_ROWS", 7)
    np.testing.assert_allclose(pool_templates(emb, identity, k, w), whole, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "best"}, "unknown method 'best'"),
        ({"transform": "sigmoid"}, "unknown quality transform 'sigmoid'"),
        ({"temperature": 0.0}, "temperature must be a positive number"),
        ({"temperature": float("nan")}, "temperature must be a positive number"),
    ],
)
def test_bad_weightings_are_refused_with_the_value(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        Weighting(**kwargs)
