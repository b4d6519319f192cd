"""Five-point face alignment: ArcFace templates, the least-squares similarity fit and the affine warp.

This reproduces insightface's ``norm_crop`` (``python-package/insightface/utils/face_align.py``) without OpenCV or
scikit-image:

1. :func:`similarity_transform` is ``skimage.transform.SimilarityTransform().estimate(src, dst)``: the closed-form
   least-squares similarity of Umeyama (1991), with the determinant correction so the result never reflects.
2. :func:`warp_affine` is ``cv2.warpAffine(img, M, (w, h), borderValue=0)``: bilinear interpolation, constant black
   border. The convention is OpenCV's: pixel centres sit at integer coordinates, so output pixel ``(x, y)`` takes the
   input value at ``M⁻¹ · (x, y, 1)``, and input pixels outside the image count as 0 in the interpolation. It is
   computed in float64 and rounded to nearest, whereas OpenCV quantises the sub-pixel weights to 1/32 pixel, so
   the two agree within about one grey level.

Landmarks are ``(5, 2)`` arrays of ``(x, y)`` pixel coordinates in the order left eye, right eye, nose, left mouth
corner, right mouth corner, where "left" means the smaller x in the image. 68-point (iBUG) landmarks are reduced
with :func:`reduce_68_to_5`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "SPHEREFACE_TEMPLATE_96X112",
    "align_face",
    "arcface_template",
    "reduce_68_to_5",
    "similarity_transform",
    "transform_points",
    "warp_affine",
]

#: The insightface 112×112 template (``arcface_dst``), ``(x, y)`` per row.
ARCFACE_TEMPLATE_112: NDArray[np.float64] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.setflags(write=False)

#: The SphereFace/CosFace 96×112 (width × height) template; the 112×112 one is this plus 8 on x.
SPHEREFACE_TEMPLATE_96X112: NDArray[np.float64] = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    dtype=np.float64,
)
SPHEREFACE_TEMPLATE_96X112.setflags(write=False)


def _check_size(size: object) -> None:
    """``ValueError`` unless ``size`` is a positive int (a caller may pass anything: a bool, a float...)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")


def arcface_template(size: int = 112) -> NDArray[np.float64]:
    """The ArcFace template for a square crop of side ``size`` (insightface ``estimate_norm``).

    Args:
        size: Output side in pixels; a multiple of 112 (template scaled by ``size/112``) or of 128 (scaled by
            ``size/128``, then ``8·size/128`` added to x).

    Returns:
        A new ``(5, 2)`` float64 array.

    Raises:
        ValueError: If ``size`` is not a positive multiple of 112 or 128.
    """
    _check_size(size)
    if size % 112 == 0:
        ratio, diff_x = size / 112.0, 0.0
    elif size % 128 == 0:
        ratio = size / 128.0
        diff_x = 8.0 * ratio
    else:
        raise ValueError(f"size must be a multiple of 112 or 128 (insightface estimate_norm), got {size}")
    dst = ARCFACE_TEMPLATE_112 * ratio
    dst[:, 0] += diff_x
    return dst


def _as_points(points: ArrayLike, name: str, n: int | None = None) -> NDArray[np.float64]:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] != n):
        want = f"({n}, 2)" if n is not None else "(N, 2)"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def reduce_68_to_5(landmarks: ArrayLike) -> NDArray[np.float64]:
    """Reduce 68 iBUG landmarks to the 5 alignment points (eval_ijbc convention).

    The eyes are the means of the eye corners (36, 39) and (42, 45); then the nose tip 30 and the mouth corners 48
    and 54 (0-based indices).

    Args:
        landmarks: ``(68, 2)`` ``(x, y)`` points.

    Returns:
        ``(5, 2)`` float64 points.

    Raises:
        ValueError: On a wrong shape or non-finite values.
    """
    pts = _as_points(landmarks, "landmarks", 68)
    return np.stack(
        [
            (pts[36] + pts[39]) / 2.0,
            (pts[42] + pts[45]) / 2.0,
            pts[30],
            pts[48],
            pts[54],
        ]
    )


def similarity_transform(src: ArrayLike, dst: ArrayLike) -> NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src`` onto ``dst``.

    Umeyama (1991), as in ``skimage.transform.SimilarityTransform.estimate``: with ``A`` the cross-covariance of the
    centred points and ``A = U S Vᵀ``, the rotation is ``U D Vᵀ`` where ``D = diag(1, sign)`` flips the last axis when
    needed so the determinant is positive.

    Args:
        src: ``(N, 2)`` source points, ``N ≥ 2``.
        dst: ``(N, 2)`` target points.

    Returns:
        The ``(2, 3)`` float64 matrix ``M`` with ``dst ≈ M @ [x, y, 1]``.

    Raises:
        ValueError: On mismatched or bad shapes, non-finite values, or coincident source points.
    """
    src_arr = _as_points(src, "src")
    dst_arr = _as_points(dst, "dst")
    if src_arr.shape != dst_arr.shape:
        raise ValueError(f"src and dst must have the same shape, got {src_arr.shape} and {dst_arr.shape}")
    if src_arr.shape[0] < 2:
        raise ValueError(f"need at least 2 points, got {src_arr.shape[0]}")
    num = src_arr.shape[0]
    src_mean = src_arr.mean(axis=0)
    dst_mean = dst_arr.mean(axis=0)
    src_c = src_arr - src_mean
    dst_c = dst_arr - dst_mean
    src_var = (src_c**2).sum() / num
    if not src_var > 0:
        raise ValueError("source points all coincide; the similarity transform is undefined")
    cov = dst_c.T @ src_c / num
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float(s @ d) / src_var
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = scale * rot
    out[:, 2] = dst_mean - scale * rot @ src_mean
    return out


def transform_points(matrix: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {m.shape}")
    pts = _as_points(points, "points")
    return pts @ m[:, :2].T + m[:, 2]


def _invert_affine(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    lin = matrix[:, :2]
    det = np.linalg.det(lin)
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise ValueError("affine matrix is singular")
    inv_lin = np.linalg.inv(lin)
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = inv_lin
    out[:, 2] = -inv_lin @ matrix[:, 2]
    return out


def warp_affine(image: NDArray, matrix: ArrayLike, size: tuple[int, int], border_value: float = 0.0) -> NDArray:
    """Warp an image by a forward affine matrix, like ``cv2.warpAffine(image, matrix, size, borderValue=...)``.

    Bilinear interpolation, constant border, pixel centres at integer coordinates (see the module docstring).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array (any real dtype).
        matrix: ``(2, 3)`` matrix mapping input coordinates to output coordinates.
        size: Output ``(width, height)``, the OpenCV order.
        border_value: Value of pixels outside the input.

    Returns:
        The warped ``(height, width[, C])`` array in the input dtype (integers rounded to nearest and clipped).
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"matrix must be a finite (2, 3) array, got shape {m.shape}")
    out_w, out_h = (int(v) for v in size)
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"size must be positive, got {size}")
    inv = _invert_affine(m)
    squeeze = img.ndim == 2
    src = img[:, :, None] if squeeze else img
    h, w = src.shape[:2]
    srcf = src.astype(np.float64)

    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    x0i = x0.astype(np.int64)
    y0i = y0.astype(np.int64)

    def tap(yi: NDArray[np.int64], xi: NDArray[np.int64]) -> NDArray[np.float64]:
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        vals = srcf[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
        return np.where(valid[..., None], vals, float(border_value))

    out = (
        tap(y0i, x0i) * (1 - fx) * (1 - fy)
        + tap(y0i, x0i + 1) * fx * (1 - fy)
        + tap(y0i + 1, x0i) * (1 - fx) * fy
        + tap(y0i + 1, x0i + 1) * fx * fy
    )
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(img.dtype)
    return out[:, :, 0] if squeeze else out


def align_face(
    image: NDArray[np.uint8],
    landmarks: ArrayLike,
    size: int = 112,
    template: ArrayLike | None = None,
) -> NDArray[np.uint8]:
    """Align a face onto the ArcFace template (insightface ``norm_crop``).

    Args:
        image: ``uint8`` ``(H, W, 3)`` image (``(H, W)`` or ``(H, W, 1)`` greyscale is replicated to 3 channels).
            Channel order is kept as given.
        landmarks: ``(5, 2)`` ``(x, y)`` points (order in the module docstring), or ``(68, 2)`` iBUG points.
        size: Output side; the template is :func:`arcface_template` ``(size)`` unless ``template`` is given.
        template: Optional ``(5, 2)`` target points in output pixels (e.g. a custom template for ``size``).

    Returns:
        The aligned ``uint8`` ``(size, size, 3)`` crop.

    Raises:
        ValueError: On a bad image, landmark shape, non-finite landmarks or an unsupported size.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {np.asarray(image).shape}")
    lmk = np.asarray(landmarks, dtype=np.float64)
    if lmk.shape == (68, 2):
        lmk = reduce_68_to_5(lmk)
    lmk = _as_points(lmk, "landmarks", 5)
    if template is None:
        dst = arcface_template(size)
    else:
        _check_size(size)
        dst = _as_points(template, "template", 5)
    matrix = similarity_transform(lmk, dst)
    return warp_affine(img, matrix, (int(size), int(size)))
