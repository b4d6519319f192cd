"""A synthetic identity dataset with known, per-sample degradations, deterministic from a seed.

Each identity is a smooth, face-like procedural pattern drawn from its own random stream ``(seed, identity)``: a
soft oval with a per-identity skin colour, hair cap, eyes, brows, nose and mouth (positions, sizes and colours are
identity parameters) plus a few low-frequency colour blobs as "texture". Samples of one identity differ by a small
pose jitter (shift, scale, in-plane rotation), expression-like perturbations (mouth width/opening, eye opening,
feature positions), a brightness gain and a random low-frequency background.

Each sample then gets one degradation from :data:`DEGRADATIONS` with a severity in ``[0, 1]`` (0 = clean) and its
truth ``quality_truth = 1 - severity`` (higher is better). Strengths at severity 1:

* ``blur``: Gaussian blur with standard deviation ``0.1 * size`` pixels (Pillow ``GaussianBlur``);
* ``noise``: additive Gaussian noise with standard deviation ``0.5 * 255``, clipped to ``[0, 255]``;
* ``lowres``: resized down by a factor of 12 (bilinear, antialiased) and back up (bilinear);
* ``occlusion``: a rectangle of one random colour covering 60 % of the image area (area grows linearly);
* ``illumination``: ``255 * gain * (v / 255) ** gamma`` with, darkening, ``gamma = 1 + 2s``, ``gain = 1 - 0.5s``
  or, brightening, ``gamma = 1 / (1 + 2s)``, ``gain = 1 + 0.5s`` (direction drawn per sample).

Determinism: sample ``index`` is rendered from the random streams ``(seed, 1, index)`` (pose, expression,
background) and ``(seed, 2, index)`` (degradation type, severity, then the degradation's own randomness), and its
identity from ``(seed, 0, identity)`` (verification pairs from ``(seed, 3, pair_seed)``); nothing depends on access
order, the process or earlier calls, so any index can be generated alone, in any DataLoader worker. Identity ``k``
looks the same for any ``num_identities``; use a different ``seed`` for a disjoint set of evaluation identities.

Items are ``(image, label, info)``: ``image`` is RGB ``uint8`` ``(H, W, 3)`` (the project's decoded-image
convention; pass ``transform`` to convert), ``label`` an ``int`` in ``[0, num_identities)``, and ``info`` a dict
with the same keys for every sample (so the default collate works): ``degradation`` (str, ``"none"`` when clean),
``severity`` and ``quality_truth`` (floats).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

DEGRADATIONS: tuple[str, ...] = ("blur", "noise", "lowres", "occlusion", "illumination")
BLUR_SIGMA = 0.1  # times the image size, at severity 1
NOISE_STD = 0.5 * 255.0
LOWRES_FACTOR = 12.0
OCCLUSION_AREA = 0.6
ILLUMINATION_GAMMA = 2.0
ILLUMINATION_GAIN = 0.5

_IDENTITY_STREAM, _SAMPLE_STREAM, _DEGRADATION_STREAM = 0, 1, 2


@dataclass(frozen=True)
class SampleSpec:
    """The known degradation of one sample.

    Attributes:
        index: sample index.
        label: identity.
        degradation: one of :data:`DEGRADATIONS`, or ``"none"`` (clean).
        severity: in ``[0, 1]``; 0 means the clean image.
        occlusion_box: ``(x0, y0, x1, y1)`` pixel box (end exclusive) of the occluder, else ``None``.
    """

    index: int
    label: int
    degradation: str
    severity: float
    occlusion_box: tuple[int, int, int, int] | None = None

    @property
    def quality_truth(self) -> float:
        """``1 - severity``: 1 for a clean sample, 0 for the strongest degradation."""
        return 1.0 - self.severity


@dataclass(frozen=True)
class SyntheticPairs:
    """Verification pairs of a :class:`SyntheticFaces` dataset, balanced genuine/impostor.

    Attributes:
        index_a: first sample index per pair, ``int64 (P,)``.
        index_b: second sample index per pair, ``int64 (P,)``.
        issame: ``bool (P,)``, true for a genuine pair.
        quality_a: ``quality_truth`` of the first sample, ``float64 (P,)``.
        quality_b: ``quality_truth`` of the second sample, ``float64 (P,)``.
    """

    index_a: np.ndarray
    index_b: np.ndarray
    issame: np.ndarray
    quality_a: np.ndarray
    quality_b: np.ndarray

    def __len__(self) -> int:
        return int(self.issame.shape[0])

    @property
    def pair_quality(self) -> np.ndarray:
        """Per-pair truth: the lower of the two sample qualities (the usual pair-quality convention)."""
        return np.minimum(self.quality_a, self.quality_b)


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def _blob(u: np.ndarray, v: np.ndarray, cx: float, cy: float, sx: float, sy: float, angle: float = 0.0) -> np.ndarray:
    """An anisotropic Gaussian bump (peak 1) centred at ``(cx, cy)`` in face coordinates."""
    du, dv = u - cx, v - cy
    c, s = math.cos(angle), math.sin(angle)
    a = (du * c + dv * s) / sx
    b = (-du * s + dv * c) / sy
    return np.exp(-0.5 * (a * a + b * b))


def _over(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend a constant colour over ``image`` in place."""
    image += alpha[..., None] * (colour - image)


def _identity_params(seed: int, identity: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, _IDENTITY_STREAM, identity])
    params: dict[str, float | np.ndarray] = {
        "axes": rng.uniform([0.46, 0.60], [0.62, 0.78]),
        "skin": rng.uniform([0.30, 0.18, 0.12], [0.98, 0.85, 0.75]),
        "hair": rng.uniform(0.0, 0.8, 3),
        "hairline": rng.uniform(-0.62, -0.28),
        "eye_y": rng.uniform(-0.20, -0.04),
        "eye_dx": rng.uniform(0.16, 0.30),
        "eye_r": rng.uniform(0.055, 0.10),
        "iris": rng.uniform(0.0, 0.5, 3),
        "brow_dy": rng.uniform(0.10, 0.17),
        "brow_w": rng.uniform(0.07, 0.14),
        "brow_tilt": rng.uniform(-0.35, 0.35),
        "nose_y": rng.uniform(0.06, 0.20),
        "nose_s": rng.uniform(0.04, 0.09),
        "mouth_y": rng.uniform(0.30, 0.46),
        "mouth_w": rng.uniform(0.10, 0.22),
        "mouth_h": rng.uniform(0.025, 0.055),
        "lips": rng.uniform([0.45, 0.05, 0.05], [0.95, 0.45, 0.50]),
        "texture_xy": rng.uniform(-0.45, 0.45, (5, 2)),
        "texture_s": rng.uniform(0.08, 0.20, 5),
        "texture_a": rng.uniform(0.25, 0.6, 5),
        "texture_c": rng.uniform(0.0, 1.0, (5, 3)),
    }
    # float32 arrays and Python floats keep the rendering in float32 (NumPy promotes with float64 scalars).
    return {k: v.astype(np.float32) if isinstance(v, np.ndarray) else float(v) for k, v in params.items()}


def render_face(seed: int, identity: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Render one clean sample of ``identity`` as float RGB ``(size, size, 3)`` in ``[0, 1]``.

    ``rng`` supplies the per-sample variation (pose, expression, background) and is consumed.
    """
    p = _identity_params(seed, identity)
    tx, ty = (float(t) for t in rng.uniform(-0.07, 0.07, 2))
    scale = float(rng.uniform(0.9, 1.1))
    rot = float(rng.uniform(-0.18, 0.18))  # radians, about 10 degrees
    mouth_w, mouth_h = p["mouth_w"] * float(rng.uniform(0.8, 1.25)), p["mouth_h"] * float(rng.uniform(0.6, 1.8))
    eye_open = float(rng.uniform(0.55, 1.1))
    jitter = rng.uniform(-0.02, 0.02, (4, 2)).tolist()
    gain = float(rng.uniform(0.88, 1.12))
    bg_a, bg_b = rng.uniform(0.0, 1.0, (2, 3)).astype(np.float32)
    bg_angle = float(rng.uniform(0.0, 2 * math.pi))

    coords = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    ramp = np.clip(0.5 + 0.5 * (x * math.cos(bg_angle) + y * math.sin(bg_angle)), 0.0, 1.0)[..., None]
    image = bg_a * (1 - ramp) + bg_b * ramp

    # Face coordinates: undo the similarity transform (shift, scale, rotation) of the pose.
    c, s = math.cos(rot), math.sin(rot)
    xs, ys = (x - tx) / scale, (y - ty) / scale
    u, v = xs * c + ys * s, -xs * s + ys * c

    edge = 0.04
    ax, ay = p["axes"].tolist()
    radius = np.sqrt((u / ax) ** 2 + ((v - 0.05) / ay) ** 2)
    face = 1.0 / (1.0 + np.exp((radius - 1.0) / edge))
    _over(image, face, p["skin"])
    for (bx, by), bs, ba, bc in zip(
        p["texture_xy"].tolist(), p["texture_s"].tolist(), p["texture_a"].tolist(), p["texture_c"], strict=True
    ):
        _over(image, face * ba * _blob(u, v, bx * ax, by * ay, bs, bs), bc)
    hair_radius = np.sqrt((u / (ax * 1.08)) ** 2 + ((v - 0.02) / (ay * 1.08)) ** 2)
    hair = (1.0 / (1.0 + np.exp((hair_radius - 1.0) / edge))) / (1.0 + np.exp((v - p["hairline"]) / edge))
    _over(image, hair, p["hair"])

    white = np.array([0.95, 0.95, 0.92], dtype=np.float32)
    brow_colour = p["hair"] * 0.6
    for side, (jx, jy) in zip((-1.0, 1.0), jitter[:2], strict=True):
        ex, ey = side * p["eye_dx"] + jx, p["eye_y"] + jy
        _over(image, _blob(u, v, ex, ey, p["eye_r"] * 1.3, p["eye_r"] * 0.7 * eye_open), white)
        _over(image, _blob(u, v, ex, ey, p["eye_r"] * 0.55, p["eye_r"] * 0.55 * eye_open), p["iris"])
        brow = _blob(u, v, ex, ey - p["brow_dy"], p["brow_w"], 0.022, side * p["brow_tilt"])
        _over(image, 0.9 * brow, brow_colour)
    nx, ny = jitter[2]
    _over(image, 0.5 * _blob(u, v, nx, p["nose_y"] + ny, p["nose_s"] * 0.6, p["nose_s"]), p["skin"] * 0.6)
    mx, my = jitter[3]
    _over(image, _blob(u, v, mx, p["mouth_y"] + my, mouth_w, mouth_h), p["lips"])
    return np.clip(image * gain, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Degradations


def _blur(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    sigma = severity * BLUR_SIGMA * image.shape[0]
    return np.array(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)), dtype=np.uint8)


def _noise(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0.0, severity * NOISE_STD, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _lowres(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    factor = 1.0 + severity * (LOWRES_FACTOR - 1.0)
    small = (max(2, round(width / factor)), max(2, round(height / factor)))
    if small == (width, height):
        return image
    pil = Image.fromarray(image).resize(small, Image.Resampling.BILINEAR)
    return np.array(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def _occlusion_box(size: int, severity: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = severity * OCCLUSION_AREA * size * size
    aspect = math.exp(rng.uniform(-math.log(2.0), math.log(2.0)))
    width = min(size, max(1, round(math.sqrt(area * aspect))))
    height = min(size, max(1, round(area / width)))
    x0 = int(rng.integers(0, size - width + 1))
    y0 = int(rng.integers(0, size - height + 1))
    return x0, y0, x0 + width, y0 + height


def _illumination(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    darken = bool(rng.random() < 0.5)
    gamma = 1.0 + ILLUMINATION_GAMMA * severity
    gain = 1.0 - ILLUMINATION_GAIN * severity if darken else 1.0 + ILLUMINATION_GAIN * severity
    exponent = gamma if darken else 1.0 / gamma
    out = 255.0 * gain * (image.astype(np.float32) / 255.0) ** exponent
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


_APPLY: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "blur": _blur,
    "noise": _noise,
    "lowres": _lowres,
    "illumination": _illumination,
}


def degrade(
    image: np.ndarray, degradation: str, severity: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Apply one degradation to an RGB ``uint8`` ``(H, W, 3)`` image (square for ``occlusion``).

    Returns:
        The degraded image (the input itself when ``severity == 0`` or ``degradation == "none"``) and the
        occluder's ``(x0, y0, x1, y1)`` box for ``occlusion``, else ``None``.

    Raises:
        ValueError: an unknown degradation or a severity outside ``[0, 1]``.
    """
    if degradation != "none" and degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; expected 'none' or one of {DEGRADATIONS}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    if degradation == "none" or severity == 0.0:
        return image, None
    if degradation == "occlusion":
        box = _occlusion_box(image.shape[0], severity, rng)
        out = image.copy()
        out[box[1] : box[3], box[0] : box[2]] = rng.integers(0, 256, 3, dtype=np.uint8)
        return out, box
    return _APPLY[degradation](image, severity, rng), None


# ----------------------------------------------------------------------------------------------------------------
# Dataset


class SyntheticFaces(Dataset):
    """Procedural identities with known per-sample degradations (see the module docstring).

    Sample ``index`` belongs to identity ``index // images_per_identity``. The type and severity of every sample
    are known without rendering (:meth:`spec`, :attr:`quality_truth`), which is cheap for the whole dataset.

    Args:
        num_identities: number of identities (classes), at least 1.
        images_per_identity: samples per identity, at least 1.
        size: image height and width in pixels (at least 8; 112 matches the usual face crop).
        seed: non-negative seed; everything is a function of ``(seed, index)``.
        degradations: the types to draw from, a subset of :data:`DEGRADATIONS`; empty means all samples clean.
        severity_range: ``(low, high)`` within ``[0, 1]``; a degraded sample's severity is uniform on it.
        clean_fraction: probability that a sample is left clean (``"none"``, severity 0).
        transform: optional callable applied to the ``uint8`` image before it is returned.
    """

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        *,
        size: int = 112,
        seed: int = 0,
        degradations: Sequence[str] = DEGRADATIONS,
        severity_range: tuple[float, float] = (0.0, 1.0),
        clean_fraction: float = 0.0,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError(
                f"num_identities and images_per_identity must be >= 1, got {num_identities}, {images_per_identity}"
            )
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        unknown = [d for d in degradations if d not in DEGRADATIONS]
        if unknown:
            raise ValueError(f"unknown degradations {unknown}; expected a subset of {DEGRADATIONS}")
        low, high = severity_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"severity_range must satisfy 0 <= low <= high <= 1, got {severity_range}")
        if not 0.0 <= clean_fraction <= 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1], got {clean_fraction}")
        self.num_identities = int(num_identities)
        self.images_per_identity = int(images_per_identity)
        self.size = int(size)
        self.seed = int(seed)
        self.degradations = tuple(degradations)
        self.severity_range = (float(low), float(high))
        self.clean_fraction = float(clean_fraction)
        self.transform = transform
        self._quality: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """The number of identities."""
        return self.num_identities

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def _check_index(self, index: int) -> int:
        n, index = len(self), int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return index % n

    def _draw(self, index: int) -> tuple[str, float, np.random.Generator]:
        """Type and severity of sample ``index`` and the generator positioned for the degradation's randomness."""
        rng = np.random.default_rng([self.seed, _DEGRADATION_STREAM, index])
        clean = rng.random() < self.clean_fraction
        kind = self.degradations[int(rng.integers(len(self.degradations)))] if self.degradations else "none"
        severity = float(rng.uniform(*self.severity_range))
        if clean or kind == "none":
            return "none", 0.0, rng
        return kind, severity, rng

    def label(self, index: int) -> int:
        """Identity of sample ``index``."""
        return self._check_index(index) // self.images_per_identity

    @property
    def labels(self) -> np.ndarray:
        """Identity of every sample, ``int64 (N,)``."""
        return np.repeat(np.arange(self.num_identities, dtype=np.int64), self.images_per_identity)

    @property
    def quality_truth(self) -> np.ndarray:
        """``1 - severity`` of every sample, ``float64 (N,)`` (computed once, without rendering)."""
        if self._quality is None:
            self._quality = np.array([1.0 - self._draw(i)[1] for i in range(len(self))], dtype=np.float64)
        return self._quality

    def clean_image(self, index: int) -> np.ndarray:
        """Sample ``index`` before degradation, RGB ``uint8`` ``(size, size, 3)``."""
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, index])
        face = render_face(self.seed, index // self.images_per_identity, rng, self.size)
        return np.rint(face * 255.0).astype(np.uint8)

    def render(self, index: int) -> tuple[np.ndarray, SampleSpec]:
        """Sample ``index``, degraded, as RGB ``uint8`` ``(size, size, 3)`` (no transform) and its spec."""
        index = self._check_index(index)
        kind, severity, rng = self._draw(index)
        image, box = degrade(self.clean_image(index), kind, severity, rng)
        return image, SampleSpec(index, index // self.images_per_identity, kind, severity, box)

    def spec(self, index: int) -> SampleSpec:
        """The :class:`SampleSpec` of sample ``index`` (renders it only for an occlusion, to know the box)."""
        index = self._check_index(index)
        kind, severity, _ = self._draw(index)
        if kind == "occlusion" and severity > 0:
            return self.render(index)[1]
        return SampleSpec(index, index // self.images_per_identity, kind, severity)

    def __getitem__(self, index: int) -> tuple[Any, int, dict[str, Any]]:
        image, spec = self.render(index)
        info = {"degradation": spec.degradation, "severity": spec.severity, "quality_truth": spec.quality_truth}
        return (self.transform(image) if self.transform is not None else image), spec.label, info

    def images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stack of degraded samples, RGB ``uint8`` ``(n, size, size, 3)`` (no transform)."""
        out = np.empty((len(indices), self.size, self.size, 3), dtype=np.uint8)
        for row, index in enumerate(indices):
            out[row] = self.render(int(index))[0]
        return out

    def pairs(self, num_pairs: int, *, seed: int = 0) -> SyntheticPairs:
        """Balanced verification pairs over this dataset; see :func:`make_pairs`."""
        return make_pairs(self, num_pairs, seed=seed)


def make_pairs(dataset: SyntheticFaces, num_pairs: int, *, seed: int = 0) -> SyntheticPairs:
    """Deterministic, balanced verification pairs with per-pair quality truths.

    Half the pairs are genuine (two different samples of one identity), half impostor (samples of two different
    identities), in a shuffled order; all draws come from ``numpy.random.default_rng([dataset.seed, 3, seed])``.
    Pairs may repeat when ``num_pairs`` is large for the dataset. Build the dataset with a seed not used for
    training to evaluate on unseen identities.

    Raises:
        ValueError: ``num_pairs`` not a positive even number, fewer than 2 identities or 2 images per identity.
    """
    if num_pairs < 2 or num_pairs % 2:
        raise ValueError(f"num_pairs must be a positive even number, got {num_pairs}")
    if dataset.num_identities < 2 or dataset.images_per_identity < 2:
        raise ValueError("pairs need at least 2 identities and 2 images per identity")
    rng = np.random.default_rng([dataset.seed, 3, seed])
    half, per = num_pairs // 2, dataset.images_per_identity
    genuine_id = rng.integers(0, dataset.num_identities, half)
    first = rng.integers(0, per, half)
    second = (first + rng.integers(1, per, half)) % per  # a different sample of the same identity
    id_a = rng.integers(0, dataset.num_identities, half)
    id_b = (id_a + rng.integers(1, dataset.num_identities, half)) % dataset.num_identities
    impostor_a = id_a * per + rng.integers(0, per, half)
    impostor_b = id_b * per + rng.integers(0, per, half)
    index_a = np.concatenate([genuine_id * per + first, impostor_a]).astype(np.int64)
    index_b = np.concatenate([genuine_id * per + second, impostor_b]).astype(np.int64)
    issame = np.concatenate([np.ones(half, dtype=bool), np.zeros(half, dtype=bool)])
    order = rng.permutation(num_pairs)
    index_a, index_b, issame = index_a[order], index_b[order], issame[order]
    quality = dataset.quality_truth
    return SyntheticPairs(index_a, index_b, issame, quality[index_a], quality[index_b])
