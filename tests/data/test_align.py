"""Tests for qualiface.data.align: templates, the Umeyama fit, the warp, and alignment of real MTFL faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _helpers.shared_data import SHARED_DATA
from qualiface.data.align import (
    ARCFACE_TEMPLATE_112,
    SPHEREFACE_TEMPLATE_96X112,
    align_face,
    arcface_template,
    reduce_68_to_5,
    similarity_transform,
    transform_points,
    warp_affine,
)

MTFL = SHARED_DATA / "mtfl-landmarks"


def _reference_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Non-reflective similarity as the 4-parameter linear least squares [a -b tx; b a ty]."""
    n = src.shape[0]
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    rhs = dst.reshape(-1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, rhs, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _reference_reflective(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Reflective similarity [a b tx; b -a ty] by linear least squares."""
    n = src.shape[0]
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.column_stack([src[:, 0], src[:, 1], np.ones(n), np.zeros(n)])
    rows[1::2] = np.column_stack([-src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    return np.array([[a, b, tx], [b, -a, ty]])


def _residual(m: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    return float(((transform_points(m, src) - dst) ** 2).sum())


def test_templates() -> None:
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112 - SPHEREFACE_TEMPLATE_96X112, [[8.0, 0.0]] * 5)
    np.testing.assert_allclose(arcface_template(112), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    t128 = arcface_template(128)
    np.testing.assert_allclose(t128[:, 1], ARCFACE_TEMPLATE_112[:, 1])
    np.testing.assert_allclose(t128[:, 0], ARCFACE_TEMPLATE_112[:, 0] + 8.0)
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        arcface_template(100)
    with pytest.raises(ValueError, match="positive int"):
        arcface_template(0)


@pytest.mark.parametrize("seed", range(5))
def test_similarity_matches_lstsq_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = rng.uniform(0, 112, size=(5, 2))
    np.testing.assert_allclose(similarity_transform(src, dst), _reference_lstsq(src, dst), rtol=1e-9, atol=1e-9)


def test_similarity_recovers_known_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(-50, 50, size=(7, 2))
    angle, scale, t = 0.7, 1.8, np.array([12.5, -3.0])
    true = np.array([[scale * np.cos(angle), -scale * np.sin(angle)], [scale * np.sin(angle), scale * np.cos(angle)]])
    dst = src @ true.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], true, atol=1e-12)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-10)


def test_similarity_never_reflects() -> None:
    rng = np.random.default_rng(2)
    dst = ARCFACE_TEMPLATE_112.copy()
    src = dst.copy()
    src[:, 0] = 112 - src[:, 0]  # mirrored face: the best fit is a reflection
    src += rng.normal(0, 0.5, size=src.shape)
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    refl = _reference_reflective(src, dst)
    assert np.linalg.det(refl[:, :2]) < 0
    assert _residual(refl, src, dst) < _residual(m, src, dst)
    np.testing.assert_allclose(m, _reference_lstsq(src, dst), atol=1e-9)


@pytest.mark.parametrize(
    ("src", "dst", "match"),
    [
        (np.zeros((5, 3)), np.zeros((5, 2)), "shape"),
        (np.ones((5, 2)), np.ones((4, 2)), "same shape"),
        (np.array([[np.nan, 0.0], [1.0, 1.0]]), np.ones((2, 2)), "non-finite"),
        (np.ones((5, 2)), np.arange(10.0).reshape(5, 2), "coincide"),
    ],
)
def test_similarity_errors(src: np.ndarray, dst: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        similarity_transform(src, dst)


def test_reduce_68_to_5() -> None:
    pts = np.arange(136, dtype=np.float64).reshape(68, 2)
    out = reduce_68_to_5(pts)
    np.testing.assert_allclose(out[0], (pts[36] + pts[39]) / 2)
    np.testing.assert_allclose(out[1], (pts[42] + pts[45]) / 2)
    np.testing.assert_allclose(out[2:], pts[[30, 48, 54]])
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        reduce_68_to_5(pts[:5])


def test_warp_moves_marked_pixel() -> None:
    img = np.zeros((60, 80, 3), dtype=np.uint8)
    img[20, 30] = (255, 128, 7)
    angle, scale = 0.3, 1.0
    m = np.array(
        [[scale * np.cos(angle), -scale * np.sin(angle), 5.0], [scale * np.sin(angle), scale * np.cos(angle), 2.0]]
    )
    # choose the translation so the marked pixel lands exactly on an integer output pixel
    target = np.array([40.0, 35.0])
    m[:, 2] = target - m[:, :2] @ np.array([30.0, 20.0])
    out = warp_affine(img, m, (90, 70))
    assert out.shape == (70, 90, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[35, 40], (255, 128, 7))
    # neighbours within one pixel get bilinear spill-over, everything farther is black
    assert np.unravel_index(out[..., 0].argmax(), out.shape[:2]) == (35, 40)
    out[34:37, 39:42] = 0
    assert out.max() == 0


def test_warp_identity_and_half_pixel_shift() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(warp_affine(img, ident, (20, 16)), img)
    # shift right by half a pixel: output x takes input x - 0.5, the mean of two neighbours; column 0 blends with 0
    shifted = warp_affine(img.astype(np.float64), [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], (20, 16))
    np.testing.assert_allclose(shifted[:, 1:], (img[:, 1:].astype(float) + img[:, :-1]) / 2)
    np.testing.assert_allclose(shifted[:, 0], img[:, 0] / 2)


def test_align_face_shapes_and_errors() -> None:
    img = np.full((80, 80, 3), 200, dtype=np.uint8)
    lmk = ARCFACE_TEMPLATE_112 * 0.7
    out = align_face(img, lmk)
    assert out.shape == (112, 112, 3)
    assert out.dtype == np.uint8
    assert align_face(img[:, :, 0], lmk).shape == (112, 112, 3)
    assert align_face(img, lmk, size=128).shape == (128, 128, 3)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        align_face(img, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        align_face(img, np.where(np.eye(5, 2) > 0, np.inf, lmk))
    with pytest.raises(ValueError, match="uint8"):
        align_face(img.astype(np.float32), lmk)


def _mtfl_slice(n: int) -> list[tuple[Path, np.ndarray]]:
    lines = (MTFL / "lfw_5590_landmarks.txt").read_text().split("\n")
    out = []
    for line in lines[:n]:
        parts = line.split()
        vals = np.array([float(v) for v in parts[1:11]])
        out.append((MTFL / parts[0], np.stack([vals[:5], vals[5:]], axis=1)))
    return out


@pytest.mark.skipif(not MTFL.is_dir(), reason=f"shared test data not present: {MTFL}")
def test_align_real_mtfl_faces() -> None:
    """Landmarks mapped by the fitted transform land near the template; the crop is a plausible, non-black face."""
    errors = []
    for path, lmk in _mtfl_slice(50):
        img = np.asarray(Image.open(path).convert("RGB"))
        crop = align_face(img, lmk)
        assert crop.shape == (112, 112, 3)
        m = similarity_transform(lmk, ARCFACE_TEMPLATE_112)
        errors.append(np.linalg.norm(transform_points(m, lmk) - ARCFACE_TEMPLATE_112, axis=1))
        # the centre of the crop (the face) lies inside the source image, so it is not border black
        assert crop[40:90, 35:80].mean() > 10
    err = np.concatenate(errors)
    print(f"MTFL 50 faces: mean landmark error {err.mean():.3f} px, max {err.max():.3f} px")
    # measured: mean 2.70 px, max 12.11 px (annotation noise + face-shape spread; all 4,151 LFW faces: mean 2.83)
    assert err.mean() < 3.5
    assert err.max() < 15.0


def _pillow_align(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Independent warp with Pillow, converting OpenCV's integer pixel centres to Pillow's half-pixel ones."""
    lin = np.linalg.inv(m[:, :2])
    t = -lin @ m[:, 2] + 0.5 - lin @ np.array([0.5, 0.5])
    coef = (lin[0, 0], lin[0, 1], t[0], lin[1, 0], lin[1, 1], t[1])
    pil = Image.fromarray(img).transform((size, size), Image.Transform.AFFINE, coef, Image.Resampling.BILINEAR)
    return np.asarray(pil)


@pytest.mark.skipif(not MTFL.is_dir(), reason=f"shared test data not present: {MTFL}")
def test_align_matches_pillow_on_real_faces() -> None:
    for path, lmk in _mtfl_slice(10):
        img = np.asarray(Image.open(path).convert("RGB"))
        ours = align_face(img, lmk).astype(int)
        ref = _pillow_align(img, similarity_transform(lmk, ARCFACE_TEMPLATE_112), 112).astype(int)
        assert np.abs(ours - ref)[4:-4, 4:-4].max() <= 1


def _reference_normal_equations(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Closed-form float64 least squares for ``[a -b tx; b a ty]`` from the centred normal equations."""
    sc, dc = src - src.mean(axis=0), dst - dst.mean(axis=0)
    denom = (sc**2).sum()
    a = (sc * dc).sum() / denom
    b = (sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum() / denom
    lin = np.array([[a, -b], [b, a]])
    return np.column_stack([lin, dst.mean(axis=0) - lin @ src.mean(axis=0)])


@pytest.mark.skipif(not MTFL.is_dir(), reason=f"shared test data not present: {MTFL}")
def test_similarity_on_real_mtfl_landmarks_equals_float64_references() -> None:
    """On 200 annotated LFW and AFLW faces the Umeyama fit equals two independent float64 least-squares solutions
    (``lstsq`` on the 4-parameter system and the centred normal equations), and its residual is the minimum."""
    lines = (MTFL / "lfw_5590_landmarks.txt").read_text().split("\n")[:100]
    lines += (MTFL / "aflw_landmarks.txt").read_text().split("\n")[:100]
    for line in lines:
        vals = np.array([float(v) for v in line.split()[1:11]])
        lmk = np.stack([vals[:5], vals[5:]], axis=1)
        m = similarity_transform(lmk, ARCFACE_TEMPLATE_112)
        np.testing.assert_allclose(m, _reference_lstsq(lmk, ARCFACE_TEMPLATE_112), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(m, _reference_normal_equations(lmk, ARCFACE_TEMPLATE_112), rtol=1e-9, atol=1e-9)
        assert np.linalg.det(m[:, :2]) > 0
