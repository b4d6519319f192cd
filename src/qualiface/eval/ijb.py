"""IJB-B / IJB-C template evaluation: image features -> template features -> 1:1 TAR@FAR and 1:N identification.

Protocol (protocols.md §3.3-§3.7; ``deepinsight/insightface: recognition/arcface_torch/eval_ijbc.py`` and
``recognition/_evaluation_/ijb/ijb_evals.py``), default test mode "N1D1F1":

1. **Flip (F)**: ``v = f(x) + f(flip x)``, the raw halves summed (``flip_fusion="sum_raw"``).
2. **Norm (N)**: the raw norm is *kept* (insightface ``use_norm_score=True``); ``normalize_images=True`` L2-normalises
   ``v`` instead.
3. **Detector score (D)**: ``v <- v * faceness`` (last column of ``name_5pts_score``).
4. **Pooling**: per template (``np.unique`` order) the images are grouped by media id; a media contributes the
   **mean** of its images, the template is the **sum** of its media, then L2-normalised.
5. **Score**: ``s = <t1, t2>`` for each pair, in file order. TAR@FAR uses ``sklearn.metrics.roc_curve`` with
   ``drop_intermediate=True`` and the nearest-FPR rule (:mod:`qualiface.eval.roc`).

Variants (:data:`POOLING_PRESETS`): AdaFace (no faceness), MagFace (no flip, no faceness, media features
L2-normalised unless ``magface_qlt``, template = mean of media, score ``1 - arccos(cos)/pi``), CR-FIQA
(``concat_normalised`` flips, no faceness). Per-image quality weights (optional) multiply ``v`` like the faceness
score, so they weight frames within a media and media within a template.

Scoring never materialises the templates x templates matrix: pairs are grouped by blocks of row templates and each
block is one matrix product with only the columns its pairs need (:func:`score_template_pairs`).
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from qualiface.eval.fusion import FLIP_FUSION_MODES, FlipFusion, fuse_flip
from qualiface.eval.results import Result
from qualiface.eval.roc import (
    IJB_FARS,
    auc,
    decimate_roc,
    eer_from_counts,
    roc_counts,
    tar_at_far_from_counts,
)

ScoreType = Literal["cosine", "arccos"]


@dataclass(frozen=True)
class TemplatePooling:
    """How image features become template features (defaults: insightface N1D1F1).

    Attributes:
        flip_fusion: ``"none"`` (first features only), ``"sum_raw"`` (``f(x) + f(flip x)``, = AdaFace
            ``pre_norm_vector_add``), ``"concat_normalised"`` (``[f/|f|, f_flip/|f_flip|]``, CR-FIQA) or
            ``"norm_weighted_avg"`` (AdaFace: the direction of ``f + f_flip`` with the mean of the two norms);
            the fusion is :func:`qualiface.eval.fusion.fuse_flip`.
        normalize_images: L2-normalise each fused image feature (insightface N0); ``False`` keeps the raw norm (N1).
        use_faceness: multiply by the detector (faceness) score (D1).
        normalize_media: L2-normalise each media feature before template pooling (MagFace).
        template_pool: ``"sum"`` (insightface) or ``"mean"`` (MagFace) of the media features; the template is
            L2-normalised afterwards either way.
        score: ``"cosine"`` or ``"arccos"`` (``1 - arccos(cos)/pi``, MagFace); both rank pairs identically.
    """

    flip_fusion: FlipFusion = "sum_raw"
    normalize_images: bool = False
    use_faceness: bool = True
    normalize_media: bool = False
    template_pool: Literal["sum", "mean"] = "sum"
    score: ScoreType = "cosine"

    def __post_init__(self) -> None:
        if self.flip_fusion not in FLIP_FUSION_MODES:
            raise ValueError(f"unknown flip_fusion {self.flip_fusion!r}")
        if self.template_pool not in ("sum", "mean"):
            raise ValueError(f"template_pool must be 'sum' or 'mean', got {self.template_pool!r}")
        if self.score not in ("cosine", "arccos"):
            raise ValueError(f"score must be 'cosine' or 'arccos', got {self.score!r}")


POOLING_PRESETS: dict[str, TemplatePooling] = {
    "insightface": TemplatePooling(),
    "adaface": TemplatePooling(use_faceness=False),
    "magface": TemplatePooling(
        flip_fusion="none", use_faceness=False, normalize_media=True, template_pool="mean", score="arccos"
    ),
    "magface_qlt": TemplatePooling(flip_fusion="none", use_faceness=False, template_pool="mean", score="arccos"),
    "cr_fiqa": TemplatePooling(flip_fusion="concat_normalised", use_faceness=False),
}
"""Named pooling variants: ``insightface`` (N1D1F1, default), ``adaface``, ``magface``, ``magface_qlt``, ``cr_fiqa``."""


def resolve_pooling(pooling: TemplatePooling | str) -> TemplatePooling:
    """A :class:`TemplatePooling` from itself or a preset name."""
    if isinstance(pooling, TemplatePooling):
        return pooling
    if pooling not in POOLING_PRESETS:
        raise ValueError(f"unknown pooling preset {pooling!r}; known: {sorted(POOLING_PRESETS)}")
    return POOLING_PRESETS[pooling]


def _progress(iterable: Iterable[Any], *, total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def split_flip_halves(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views ``(f(x), f(flip x))`` of insightface-layout features ``[f(x), f(flip x)]`` of shape (N, 2D)."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] % 2:
        raise ValueError(f"features with flip halves must be (N, 2D), got shape {features.shape}")
    half = features.shape[1] // 2
    return features[:, :half], features[:, half:]


@dataclass
class TemplateFeatures:
    """L2-normalised template features, one row per template id (ascending, ``np.unique`` order)."""

    template_ids: np.ndarray
    features: np.ndarray
    media_per_template: np.ndarray

    def index_of(self, ids: np.ndarray, *, source: str = "template list") -> np.ndarray:
        """Row index of each template id; ``ValueError`` naming the count and first id that has no images."""
        ids = np.asarray(ids)
        pos = np.searchsorted(self.template_ids, ids).clip(0, self.template_ids.shape[0] - 1)
        missing = self.template_ids[pos] != ids
        if missing.any():
            first = ids[np.flatnonzero(missing)[0]]
            raise ValueError(
                f"{source}: {int(missing.sum())} entr(y/ies) name templates that have no images in the features "
                f"(template ids from the face_tid_mid list), first: template {int(first)}"
            )
        return pos

    def rows(self, ids: np.ndarray, *, source: str = "template list") -> np.ndarray:
        """Feature rows of the given template ids (a copy)."""
        return self.features[self.index_of(ids, source=source)]


def _check_image_inputs(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    flipped: np.ndarray | None,
    faceness: np.ndarray | None,
    quality: np.ndarray | None,
    pooling: TemplatePooling,
) -> None:
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {features.shape}")
    if features.dtype.kind not in "fiu":
        raise ValueError(f"features must be numeric, got dtype {features.dtype}")
    n = features.shape[0]
    named = {"template_ids": template_ids, "media_ids": media_ids, "faceness": faceness, "quality": quality}
    for name, array in named.items():
        if array is None:
            continue
        if array.ndim != 1 or array.shape[0] != n:
            raise ValueError(f"{name} must be 1-D with one entry per image ({n}), got shape {array.shape}")
    for name in ("template_ids", "media_ids"):
        if named[name].dtype.kind not in "iu":  # type: ignore[union-attr]
            raise ValueError(f"{name} must be integers, got dtype {named[name].dtype}")  # type: ignore[union-attr]
    if flipped is not None and flipped.shape != features.shape:
        raise ValueError(f"flipped features must have the shape of features {features.shape}, got {flipped.shape}")
    if pooling.flip_fusion != "none" and flipped is None:
        raise ValueError(f"flip_fusion={pooling.flip_fusion!r} needs the flipped features (or flip_fusion='none')")
    if pooling.use_faceness and faceness is None:
        raise ValueError("detector-score weighting (D1) needs faceness scores; pass faceness or use_faceness=False")
    for name in ("faceness", "quality"):
        array = named[name]
        if array is None:
            continue
        bad = ~np.isfinite(array) | (array < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}: {int(bad.sum())} negative or non-finite value(s), first at image row {row}")


def _image_vectors(
    features: np.ndarray,
    flipped: np.ndarray | None,
    rows: np.ndarray,
    faceness: np.ndarray | None,
    quality: np.ndarray | None,
    pooling: TemplatePooling,
) -> np.ndarray:
    """Steps 1-3 (flip fusion, norm, faceness) and the quality weight for the given image rows, float64."""
    x = features[rows]
    xf = None if pooling.flip_fusion == "none" or flipped is None else flipped[rows]
    for name, part in (("features", x), ("flipped features", xf)):
        if part is None:
            continue
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            raise ValueError(f"{name}: NaN or inf at image row {int(rows[np.flatnonzero(~finite)[0]])}")
    # qualiface.eval.fusion (protocols.md §6.1); "none" returns its input as is, so cast for float64 pooling
    v = np.asarray(fuse_flip(x, xf, pooling.flip_fusion), dtype=np.float64)
    scale = np.ones(rows.shape[0])
    if pooling.normalize_images:
        norms = np.sqrt(np.einsum("ij,ij->i", v, v))
        if (norms == 0).any():
            raise ValueError(
                f"fused image features: zero vector at image row {int(rows[np.flatnonzero(norms == 0)[0]])}"
            )
        scale /= norms
    if pooling.use_faceness:
        assert faceness is not None
        scale *= faceness[rows]
    if quality is not None:
        scale *= quality[rows]
    v *= scale[:, None]
    return v


def pool_templates(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    *,
    flipped: np.ndarray | None = None,
    faceness: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    pooling: TemplatePooling | str = "insightface",
    chunk_size: int = 32768,
    progress: bool = True,
) -> TemplateFeatures:
    """Template features from per-image features (protocols.md §3.4, ``image2template_feature``), vectorised.

    Args:
        features: (N, D) raw image features ``f(x)`` (any float dtype; pooled in float64).
        template_ids, media_ids: (N,) integer ids from ``<x>_face_tid_mid.txt``.
        flipped: (N, D) features of the flipped images, needed unless ``flip_fusion="none"``
            (use :func:`split_flip_halves` for insightface's (N, 2D) layout).
        faceness: (N,) detector scores, needed when ``pooling.use_faceness``.
        quality: optional (N,) non-negative per-image weights (quality-weighted pooling), applied like faceness.
        pooling: a :class:`TemplatePooling` or a preset name (:data:`POOLING_PRESETS`).
        chunk_size: images processed at a time (bounds the float64 working memory).
        progress: tqdm bar over the chunks (only on a TTY).

    Returns:
        :class:`TemplateFeatures` (ascending template ids, L2-normalised float64 rows).
    """
    pooling = resolve_pooling(pooling)
    features = np.asarray(features)
    template_ids = np.asarray(template_ids)
    media_ids = np.asarray(media_ids)
    flipped = None if flipped is None else np.asarray(flipped)
    faceness = None if faceness is None else np.asarray(faceness, dtype=np.float64)
    quality = None if quality is None else np.asarray(quality, dtype=np.float64)
    _check_image_inputs(features, template_ids, media_ids, flipped, faceness, quality, pooling)

    unique_templates, template_of_image = np.unique(template_ids, return_inverse=True)
    unique_media, media_code = np.unique(media_ids, return_inverse=True)
    key = template_of_image.astype(np.int64) * unique_media.shape[0] + media_code  # a media lives in one template
    media_keys, media_of_image = np.unique(key, return_inverse=True)
    media_template = media_keys // unique_media.shape[0]
    media_per_template = np.bincount(media_template, minlength=unique_templates.shape[0])

    order = np.argsort(media_of_image, kind="stable")  # images grouped by (template, media), file order inside
    sorted_media = media_of_image[order]
    media_starts = np.flatnonzero(np.r_[True, sorted_media[1:] != sorted_media[:-1]])
    wanted = np.arange(chunk_size, order.shape[0], chunk_size)
    cuts = np.unique(np.r_[0, media_starts[np.searchsorted(media_starts, wanted).clip(max=media_starts.shape[0] - 1)]])
    cuts = np.r_[cuts[cuts < order.shape[0]], order.shape[0]]

    dim = features.shape[1] * (2 if pooling.flip_fusion == "concat_normalised" else 1)
    template_sum = np.zeros((unique_templates.shape[0], dim))
    chunks = list(itertools.pairwise(cuts.tolist()))
    for lo, hi in _progress(chunks, total=len(chunks), desc="pooling templates", enabled=progress):
        rows = order[lo:hi]
        v = _image_vectors(features, flipped, rows, faceness, quality, pooling)
        media = sorted_media[lo:hi]
        starts = np.flatnonzero(np.r_[True, media[1:] != media[:-1]])
        counts = np.diff(np.r_[starts, media.shape[0]])
        media_feats = np.add.reduceat(v, starts, axis=0) / counts[:, None]  # media = mean of its images
        if pooling.normalize_media:
            norms = np.sqrt(np.einsum("ij,ij->i", media_feats, media_feats))
            if (norms == 0).any():
                m = media[starts[np.flatnonzero(norms == 0)[0]]]
                raise ValueError(
                    f"zero-norm media feature: template {int(unique_templates[media_template[m]])}, "
                    f"media {int(unique_media[media_keys[m] % unique_media.shape[0]])}"
                )
            media_feats /= norms[:, None]
        owner = media_template[media[starts]]
        t_starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        template_sum[owner[t_starts]] += np.add.reduceat(media_feats, t_starts, axis=0)  # template = sum of media
    if pooling.template_pool == "mean":
        template_sum /= media_per_template[:, None]
    norms = np.sqrt(np.einsum("ij,ij->i", template_sum, template_sum))
    zero = norms == 0
    if zero.any():
        raise ValueError(
            f"{int(zero.sum())} template(s) pool to a zero vector (all weights zero?), "
            f"first: template {int(unique_templates[np.flatnonzero(zero)[0]])}"
        )
    template_sum /= norms[:, None]
    return TemplateFeatures(unique_templates, template_sum, media_per_template)


def _check_pair_indices(n_templates: int, idx1: np.ndarray, idx2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx1 = np.asarray(idx1)
    idx2 = np.asarray(idx2)
    if idx1.ndim != 1 or idx1.shape != idx2.shape:
        raise ValueError(f"pair index arrays must be 1-D of equal length, got {idx1.shape} and {idx2.shape}")
    if idx1.dtype.kind not in "iu" or idx2.dtype.kind not in "iu":
        raise ValueError("pair indices must be integers")
    for name, idx in (("first", idx1), ("second", idx2)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_templates):
            raise ValueError(f"{name} pair index out of range [0, {n_templates})")
    return idx1, idx2


def score_template_pairs(
    templates: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    *,
    dtype: type = np.float32,
    max_block_bytes: int = 128 * 2**20,
    progress: bool = True,
) -> np.ndarray:
    """Inner products ``<templates[idx1[k]], templates[idx2[k]]>`` for every pair ``k``, in bounded memory.

    Pairs are grouped by blocks of row templates; each block is one matrix product ``T[rows] @ T[cols].T`` with
    only the columns its pairs use, and the scores are picked from it. The row side is the pair's first template,
    or the smaller index of the two when that makes the products smaller (random pairs over all templates); no
    ``n_templates x n_templates`` matrix is formed. ``dtype`` is the product precision (float32: about 1e-7).
    """
    templates = np.asarray(templates)
    if templates.ndim != 2:
        raise ValueError(f"templates must be (T, D), got shape {templates.shape}")
    n = templates.shape[0]
    idx1, idx2 = _check_pair_indices(n, idx1, idx2)
    out = np.empty(idx1.shape[0], dtype=dtype)
    if idx1.size == 0:
        return out
    index_dtype = np.int32 if n < 2**31 else np.int64
    in1 = np.bincount(idx1, minlength=n) > 0
    in2 = np.bincount(idx2, minlength=n) > 0
    n_union = int(np.count_nonzero(in1 | in2))
    if n_union * n_union / 2 < float(np.count_nonzero(in1)) * float(np.count_nonzero(in2)):
        rows_of = np.minimum(idx1, idx2)  # symmetric: only the upper triangle is needed
        cols_of = np.maximum(idx1, idx2)
        in1 = np.bincount(rows_of, minlength=n) > 0
        in2 = np.bincount(cols_of, minlength=n) > 0
    else:
        rows_of, cols_of = idx1, idx2
    rows = np.flatnonzero(in1)  # templates that head a pair, in index order
    pair_row = (np.cumsum(in1, dtype=index_dtype) - 1)[rows_of]  # position of each pair's row template in rows
    del rows_of
    itemsize = np.dtype(dtype).itemsize
    block = int(min(max(max_block_bytes // max(int(np.count_nonzero(in2)) * itemsize, 1), 64), rows.shape[0]))
    n_blocks = -(-rows.shape[0] // block)
    if n_blocks > 8:  # group the pairs by block once (radix sort of 16-bit keys) ...
        block_of_pair = (pair_row // block).astype(np.uint16 if n_blocks < 2**16 else np.int64)
        order = np.argsort(block_of_pair, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(block_of_pair, minlength=n_blocks))]
        del block_of_pair
    T = np.ascontiguousarray(templates, dtype=dtype)
    mask = np.zeros(n, dtype=bool)
    for k in _progress(range(n_blocks), total=n_blocks, desc="scoring template blocks", enabled=progress):
        lo = k * block
        if n_blocks == 1:
            sel: slice | np.ndarray = slice(None)
        elif n_blocks > 8:
            sel = order[bounds[k] : bounds[k + 1]]
        else:  # ... or, for a few blocks, scan for each block's pairs
            sel = np.flatnonzero((pair_row >= lo) & (pair_row < lo + block))
        r = pair_row[sel]
        if r.size == 0:
            continue
        c = cols_of[sel]
        mask[:] = False
        mask[c] = True
        cols = np.flatnonzero(mask)
        col_pos = np.cumsum(mask, dtype=index_dtype) - 1
        product = T[rows[lo : lo + block]] @ T[cols].T
        flat = (r - lo).astype(np.int64)
        flat *= product.shape[1]
        flat += col_pos[c]
        out[sel] = np.take(product.ravel(), flat)
    return out


def score_template_pairs_gather(
    templates: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, *, dtype: type = np.float32, chunk: int = 100_000
) -> np.ndarray:
    """The row-gather way insightface scores pairs (``sum(T[a] * T[b], -1)`` in chunks); a slow reference."""
    templates = np.asarray(templates)
    idx1, idx2 = _check_pair_indices(templates.shape[0], idx1, idx2)
    T = np.ascontiguousarray(templates, dtype=dtype)
    out = np.empty(idx1.shape[0], dtype=dtype)
    for lo in range(0, idx1.shape[0], chunk):
        a = T[idx1[lo : lo + chunk]]
        a *= T[idx2[lo : lo + chunk]]
        out[lo : lo + chunk] = a.sum(axis=1)
    return out


def cosine_to_score(cosine: np.ndarray, score: ScoreType) -> np.ndarray:
    """``"cosine"``: unchanged; ``"arccos"``: ``1 - arccos(clip(cos, -1, 1)) / pi`` (MagFace)."""
    if score == "cosine":
        return cosine
    if score == "arccos":
        return (1.0 - np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi).astype(cosine.dtype, copy=False)
    raise ValueError(f"score must be 'cosine' or 'arccos', got {score!r}")


def template_quality(
    quality: np.ndarray, template_ids: np.ndarray, *, reduce: Literal["min", "max", "mean"] = "min"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-template quality from per-image quality: ``(unique template ids, quality)``; CR-FIQA takes the min over
    the template's images (``max`` for an uncertainty such as PFE's)."""
    quality = np.asarray(quality, dtype=np.float64)
    template_ids = np.asarray(template_ids)
    if quality.shape != template_ids.shape or quality.ndim != 1:
        raise ValueError(f"quality and template_ids must be 1-D of equal length: {quality.shape}, {template_ids.shape}")
    if not np.isfinite(quality).all():
        raise ValueError(f"quality: non-finite value at image row {int(np.flatnonzero(~np.isfinite(quality))[0])}")
    unique, inverse = np.unique(template_ids, return_inverse=True)
    if reduce == "mean":
        return unique, np.bincount(inverse, weights=quality) / np.bincount(inverse)
    if reduce not in ("min", "max"):
        raise ValueError(f"reduce must be 'min', 'max' or 'mean', got {reduce!r}")
    out = np.full(unique.shape[0], np.inf if reduce == "min" else -np.inf)
    (np.minimum if reduce == "min" else np.maximum).at(out, inverse, quality)
    return unique, out


@dataclass
class IJBVerificationResult(Result):
    """IJB 1:1 verification: TAR at FAR (fractions) in both selection modes, AUC, EER, counts, a decimated ROC.

    ``tar_at_far`` is the insightface nearest-FPR selection (the numbers papers print, x100);
    ``tar_at_far_conservative`` the largest TAR with FAR <= target. The ROC arrays are actual ROC points
    (``drop_intermediate``), decimated to at most ``roc_points`` for export.
    """

    tar_at_far: dict[float, float]
    tar_at_far_conservative: dict[float, float]
    auc: float
    eer: float
    eer_threshold: float
    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_templates: int
    score_type: str
    pooling: dict[str, Any]
    roc_fpr: np.ndarray = field(repr=False)
    roc_tpr: np.ndarray = field(repr=False)
    roc_thresholds: np.ndarray = field(repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One row per FAR target: ``far, tar_nearest, tar_conservative``."""
        return [
            {"far": far, "tar_nearest": self.tar_at_far[far], "tar_conservative": self.tar_at_far_conservative[far]}
            for far in self.tar_at_far
        ]

    def summary(self) -> str:
        """The insightface table row: TAR in % (``'%.2f'``) at each FAR, then the AUC."""
        head = " | ".join(f"{far:.0e}" for far in self.tar_at_far)
        values = " | ".join(f"{100 * tar:.2f}" for tar in self.tar_at_far.values())
        return f"FAR: {head} | AUC\nTAR: {values} | {100 * self.auc:.4f}"


def verification_from_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    fars: Sequence[float] = IJB_FARS,
    n_templates: int = 0,
    score_type: str = "cosine",
    pooling: TemplatePooling | None = None,
    roc_points: int = 2000,
) -> IJBVerificationResult:
    """:class:`IJBVerificationResult` from pair scores and labels (one sort serves every number)."""
    counts = roc_counts(scores, labels)
    fpr, tpr, thresholds = counts.curve(drop_intermediate=True)
    eer_value, eer_threshold = eer_from_counts(counts)
    fpr_d, tpr_d, thr_d = decimate_roc(fpr, tpr, thresholds, max_points=roc_points)
    return IJBVerificationResult(
        tar_at_far=tar_at_far_from_counts(counts, fars, mode="nearest"),
        tar_at_far_conservative=tar_at_far_from_counts(counts, fars, mode="conservative"),
        auc=auc(fpr, tpr),
        eer=eer_value,
        eer_threshold=eer_threshold,
        n_pairs=counts.n_pos + counts.n_neg,
        n_genuine=counts.n_pos,
        n_impostor=counts.n_neg,
        n_templates=n_templates,
        score_type=score_type,
        pooling=asdict(pooling) if pooling is not None else {},
        roc_fpr=fpr_d,
        roc_tpr=tpr_d,
        roc_thresholds=thr_d,
    )


def ijb_pair_scores(
    templates: TemplateFeatures,
    pair_t1: np.ndarray,
    pair_t2: np.ndarray,
    *,
    score: ScoreType = "cosine",
    dtype: type = np.float32,
    progress: bool = True,
) -> np.ndarray:
    """Scores of the template pairs (template ids, in file order); ids without images raise ``ValueError``."""
    idx1 = templates.index_of(pair_t1, source="pair list, first template")
    idx2 = templates.index_of(pair_t2, source="pair list, second template")
    cosine = score_template_pairs(templates.features, idx1, idx2, dtype=dtype, progress=progress)
    return cosine_to_score(cosine, score)


def ijb_verification(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    pair_t1: np.ndarray,
    pair_t2: np.ndarray,
    labels: np.ndarray,
    *,
    flipped: np.ndarray | None = None,
    faceness: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    pooling: TemplatePooling | str = "insightface",
    fars: Sequence[float] = IJB_FARS,
    dtype: type = np.float32,
    roc_points: int = 2000,
    progress: bool = True,
) -> IJBVerificationResult:
    """IJB-B/C 1:1 verification from per-image features (protocols.md §3.3-§3.5; see the module docstring).

    ``pair_t1``, ``pair_t2``, ``labels`` are the columns of ``<x>_template_pair_label.txt``. ``dtype`` is the
    precision of the pair scores (float32 by default; insightface scores in float64, which can only change TAR
    where two scores are within about 1e-7).
    """
    pooling = resolve_pooling(pooling)
    labels = np.asarray(labels)
    if labels.shape != np.shape(pair_t1) or labels.shape != np.shape(pair_t2):
        raise ValueError(
            f"pair columns differ in length: {np.shape(pair_t1)}, {np.shape(pair_t2)}, labels {labels.shape}"
        )
    templates = pool_templates(
        features, template_ids, media_ids, flipped=flipped, faceness=faceness, quality=quality, pooling=pooling,
        progress=progress,
    )  # fmt: skip
    scores = ijb_pair_scores(templates, pair_t1, pair_t2, score=pooling.score, dtype=dtype, progress=progress)
    return verification_from_scores(
        scores, labels, fars=fars, n_templates=templates.template_ids.shape[0], score_type=pooling.score,
        pooling=pooling, roc_points=roc_points,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------- 1:N

INSIGHTFACE_1N_FARS: tuple[float, ...] = (*(float(10**x) for x in np.arange(-4, 0, 4 / 100)), 1.0)
"""``ijb_evals.py`` FAR grid: ``[10 ** x for x in np.arange(-4, 0, 4 / 100)] + [1]`` (101 values)."""
INSIGHTFACE_1N_SHOWN: tuple[float, ...] = INSIGHTFACE_1N_FARS[::25]
"""The FARs ``ijb_evals.py`` prints: 1e-4, 1e-3, 1e-2, 1e-1, 1."""


def _check_ranks(ranks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ranks)
    if not out or min(out) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    return out


def _check_fars(fars: Sequence[float], *, positive: bool = False) -> np.ndarray:
    out = np.asarray(list(fars), dtype=np.float64)
    if out.ndim != 1 or out.size == 0 or (out > 1).any() or (out < 0).any() or (positive and (out <= 0).any()):
        raise ValueError(f"FPIR/FAR targets must be in {'(0, 1]' if positive else '[0, 1]'}, got {list(fars)}")
    return out


def _check_features(name: str, feats: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats)
    ids = np.asarray(ids)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"{name} features must be a non-empty (N, D) array, got shape {feats.shape}")
    if ids.ndim != 1 or ids.shape[0] != feats.shape[0]:
        raise ValueError(f"{name}: {feats.shape[0]} feature rows but {ids.shape} ids")
    finite = np.isfinite(feats).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} features: NaN or inf in row {int(np.flatnonzero(~finite)[0])}")
    return feats, ids


def _first_mate(probe_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """Index of the first gallery entry with the probe's subject, -1 when there is none."""
    unique, first = np.unique(gallery_ids, return_index=True)
    pos = np.searchsorted(unique, probe_ids).clip(0, unique.shape[0] - 1)
    return np.where(unique[pos] == probe_ids, first[pos], -1)


@dataclass
class GalleryIdentification(Result):
    """Open-set 1:N on one gallery, insightface ``evaluation_1N`` (``ijb_evals.py``) definitions.

    ``rank[k]`` = mated probes whose mate ranks in the top k / mated probes; ``tpir[i]`` at ``fars[i]``: mated probes
    whose mated score beats every non-mated gallery score **and** exceeds ``thresholds[i]`` (the
    ``max(int(n_nonmated * far) - 1, 0)``-th largest of the non-mated probes' maximum scores) / mated probes.
    """

    name: str
    n_gallery: int
    n_mated: int
    n_nonmated: int
    rank_hits: dict[int, int]
    rank: dict[int, float]
    fars: np.ndarray
    thresholds: np.ndarray
    tpir: np.ndarray


def open_set_identification(
    probe_feats: np.ndarray,
    probe_ids: np.ndarray,
    gallery_feats: np.ndarray,
    gallery_ids: np.ndarray,
    *,
    fars: Sequence[float] = INSIGHTFACE_1N_FARS,
    ranks: Sequence[int] = (1, 5, 10),
    name: str = "gallery",
    block: int = 2048,
) -> GalleryIdentification:
    """Open-set identification of ``probe`` templates against one gallery (``ijb_evals.py: evaluation_1N``).

    Similarity is the inner product (float64). A probe is mated when its subject is in the gallery; its mated
    score is that of the first gallery entry of the subject and its non-mated scores are all entries of other
    subjects. Ranks and TPIR as in :class:`GalleryIdentification`. Ties count against the probe: the rank is
    ``1 + #{other gallery entries with score >= mated score}`` (insightface's ``argsort`` leaves ties unordered).
    """
    probe_feats, probe_ids = _check_features("probe", probe_feats, probe_ids)
    gallery_feats, gallery_ids = _check_features("gallery", gallery_feats, gallery_ids)
    if probe_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(f"probe and gallery dims differ: {probe_feats.shape[1]} and {gallery_feats.shape[1]}")
    ranks = _check_ranks(ranks)
    far_grid = _check_fars(fars)
    mate = _first_mate(probe_ids, gallery_ids)
    mated = mate >= 0
    n_mated, n_nonmated = int(mated.sum()), int((~mated).sum())
    if n_mated == 0:
        raise ValueError(f"{name}: no probe subject appears in the gallery")
    if n_nonmated == 0:
        raise ValueError(f"{name}: every probe is mated; open-set TPIR needs non-mated probes")
    G = gallery_feats.astype(np.float64)
    pos = np.empty(probe_ids.shape[0])
    neg_max = np.empty(probe_ids.shape[0])
    higher = np.empty(probe_ids.shape[0], dtype=np.int64)
    for lo in range(0, probe_ids.shape[0], block):
        sim = probe_feats[lo : lo + block].astype(np.float64) @ G.T
        ids = probe_ids[lo : lo + block]
        m = mate[lo : lo + block]
        r = np.arange(sim.shape[0])
        p = np.where(m >= 0, sim[r, m.clip(0)], -np.inf)
        same = ids[:, None] == gallery_ids[None, :]
        neg_max[lo : lo + block] = np.where(same, -np.inf, sim).max(axis=1)  # non-mated probes: max over all
        pos[lo : lo + block] = p
        higher[lo : lo + block] = (sim >= p[:, None]).sum(axis=1) - (m >= 0)  # others with score >= mated score
    rank_hits = {k: int(np.count_nonzero(higher[mated] < k)) for k in ranks}
    nonmated_max = np.sort(neg_max[~mated])[::-1]
    thresholds = nonmated_max[np.maximum((n_nonmated * far_grid).astype(np.int64) - 1, 0)]
    correct = pos[mated] > neg_max[mated]
    tpir = (correct[:, None] & (pos[mated][:, None] > thresholds[None, :])).sum(axis=0) / n_mated
    return GalleryIdentification(
        name=name,
        n_gallery=int(gallery_ids.shape[0]),
        n_mated=n_mated,
        n_nonmated=n_nonmated,
        rank_hits=rank_hits,
        rank={k: hits / n_mated for k, hits in rank_hits.items()},
        fars=far_grid,
        thresholds=thresholds,
        tpir=tpir,
    )


@dataclass
class IJBIdentificationResult(Result):
    """IJB 1:N, corrected open-set protocol (``ijb_evals.py``): each gallery separately, then combined.

    ``rank[k]`` = (top-k hits summed over the galleries) / number of probes, as insightface combines them (each
    IJB probe is mated in exactly one gallery, so this is the pooled rank-k); ``tpir`` = mean of the galleries'
    TPIR at each FPIR in ``fars``; ``tpir_at_fpir`` the values at the printed FPIRs.
    """

    protocol: str
    n_probes: int
    rank: dict[int, float]
    tpir_at_fpir: dict[float, float]
    fars: np.ndarray
    tpir: np.ndarray
    galleries: dict[str, GalleryIdentification]

    def rows(self) -> list[dict[str, Any]]:
        """One row per FPIR: the mean TPIR and each gallery's TPIR and threshold."""
        out = []
        for i, far in enumerate(self.fars.tolist()):
            row: dict[str, Any] = {"fpir": far, "tpir_mean": float(self.tpir[i])}
            for name, gallery in self.galleries.items():
                row[f"tpir_{name}"] = float(gallery.tpir[i])
                row[f"threshold_{name}"] = float(gallery.thresholds[i])
            out.append(row)
        return out


def _list_features(
    templates: TemplateFeatures, listed: tuple[np.ndarray, np.ndarray], source: str
) -> tuple[np.ndarray, np.ndarray]:
    from qualiface.data.ijb import template_subjects

    ids, subjects = template_subjects(listed[0], listed[1], source=source)
    return templates.rows(ids, source=source), subjects


def ijb_identification(
    templates: TemplateFeatures,
    galleries: Mapping[str, tuple[np.ndarray, np.ndarray]],
    probe: tuple[np.ndarray, np.ndarray],
    *,
    fars: Sequence[float] | None = None,
    ranks: Sequence[int] = (1, 5, 10),
) -> IJBIdentificationResult:
    """IJB-B/C 1:N, corrected open-set version (protocols.md §3.6; ``ijb_evals.py: run_model_test_1N``).

    ``galleries`` maps a name (``"G1"``, ``"G2"``) to the ``(template ids, subject ids)`` columns of its CSV,
    ``probe`` the probe CSV's columns; templates are the unique ids with their first subject. ``fars`` defaults to
    insightface's 101-point grid (10^-4 ... 1), of which 1e-4, 1e-3, 1e-2, 1e-1 and 1 go to ``tpir_at_fpir``.
    """
    if not galleries:
        raise ValueError("no gallery given")
    grid = INSIGHTFACE_1N_FARS if fars is None else tuple(float(f) for f in fars)
    shown = INSIGHTFACE_1N_SHOWN if fars is None else grid
    probe_feats, probe_ids = _list_features(templates, probe, "probe list")
    results = {}
    for name, listed in galleries.items():
        gallery_feats, gallery_ids = _list_features(templates, listed, f"gallery {name}")
        results[name] = open_set_identification(
            probe_feats, probe_ids, gallery_feats, gallery_ids, fars=grid, ranks=ranks, name=name
        )
    n_probes = int(probe_ids.shape[0])
    ranks_t = _check_ranks(ranks)
    tpir = np.mean([g.tpir for g in results.values()], axis=0)
    return IJBIdentificationResult(
        protocol="insightface ijb_evals.py evaluation_1N (open-set, galleries separately)",
        n_probes=n_probes,
        rank={k: sum(g.rank_hits[k] for g in results.values()) / n_probes for k in ranks_t},
        tpir_at_fpir={far: float(tpir[grid.index(far)]) for far in shown},
        fars=np.asarray(grid),
        tpir=tpir,
        galleries=results,
    )


@dataclass
class LegacyIJB1NResult(Result):
    """IJB 1:N as the legacy insightface ``ijb_1n.py`` computes it (not the standard FPIR; PRs #1386/#1387).

    Gallery = all galleries concatenated; ``rank[k]`` = probes whose mate is in the top k / probes; at each
    ``far`` the threshold is the ``ceil(n_probes * far)``-th largest of **all** non-mated probe-gallery scores
    pooled, and ``tpir_at_fpir[far]`` = probes with mated score > threshold / probes.
    """

    protocol: str
    n_probes: int
    n_gallery: int
    rank: dict[int, float]
    tpir_at_fpir: dict[float, float]
    thresholds: dict[float, float]


def legacy_insightface_1n_scores(
    probe_feats: np.ndarray,
    probe_ids: np.ndarray,
    gallery_feats: np.ndarray,
    gallery_ids: np.ndarray,
    *,
    fars: Sequence[float] = (0.01, 0.1),
    ranks: Sequence[int] = (1, 5, 10),
    block: int = 2048,
) -> LegacyIJB1NResult:
    """The legacy ``ijb_1n.py`` evaluation on given probe and gallery features (see :class:`LegacyIJB1NResult`).

    Each probe subject must appear exactly once among the gallery subjects (``gen_mask``), otherwise
    ``ValueError``. Ties count against the probe, as in :func:`open_set_identification`.
    """
    probe_feats, probe_ids = _check_features("probe", probe_feats, probe_ids)
    gallery_feats, gallery_ids = _check_features("gallery", gallery_feats, gallery_ids)
    ranks = _check_ranks(ranks)
    far_list = _check_fars(fars, positive=True).tolist()
    unique, counts = np.unique(gallery_ids, return_counts=True)
    pos_u = np.searchsorted(unique, probe_ids).clip(0, unique.shape[0] - 1)
    times = np.where(unique[pos_u] == probe_ids, counts[pos_u], 0)
    if (times != 1).any():
        row = int(np.flatnonzero(times != 1)[0])
        raise ValueError(
            f"legacy 1:N needs every probe subject exactly once in the gallery: subject {int(probe_ids[row])} "
            f"(probe row {row}) appears {int(times[row])} times ({int((times != 1).sum())} such probe(s))"
        )
    mate = _first_mate(probe_ids, gallery_ids)
    n_probes, n_gallery = probe_ids.shape[0], gallery_ids.shape[0]
    need = [math.ceil(n_probes * far) for far in far_list]
    if max(need) > n_probes * (n_gallery - 1):
        available = n_probes * (n_gallery - 1)
        raise ValueError(f"FAR {max(far_list)} needs {max(need)} non-mated scores; there are {available}")
    top_k = max(need)
    G = gallery_feats.astype(np.float64)
    pos = np.empty(n_probes)
    higher = np.empty(n_probes, dtype=np.int64)
    best: np.ndarray = np.empty(0)
    for lo in range(0, n_probes, block):
        sim = probe_feats[lo : lo + block].astype(np.float64) @ G.T
        r = np.arange(sim.shape[0])
        p = sim[r, mate[lo : lo + block]]
        pos[lo : lo + block] = p
        higher[lo : lo + block] = (sim >= p[:, None]).sum(axis=1) - 1
        sim[r, mate[lo : lo + block]] = -np.inf
        flat = sim.ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size > top_k:
            flat = np.partition(flat, flat.size - top_k)[flat.size - top_k :]
        best = np.concatenate([best, flat])
        if best.size > top_k:
            best = np.partition(best, best.size - top_k)[best.size - top_k :]
    neg_desc = np.sort(best)[::-1]
    thresholds = {far: float(neg_desc[k - 1]) for far, k in zip(far_list, need, strict=True)}
    return LegacyIJB1NResult(
        protocol="legacy insightface ijb_1n.py (pooled non-mated scores; not the standard FPIR)",
        n_probes=int(n_probes),
        n_gallery=int(n_gallery),
        rank={k: int(np.count_nonzero(higher < k)) / n_probes for k in ranks},
        tpir_at_fpir={far: int(np.count_nonzero(pos > thresholds[far])) / n_probes for far in far_list},
        thresholds=thresholds,
    )


def legacy_insightface_1n(
    templates: TemplateFeatures,
    galleries: Mapping[str, tuple[np.ndarray, np.ndarray]],
    probe: tuple[np.ndarray, np.ndarray],
    *,
    fars: Sequence[float] = (0.01, 0.1),
    ranks: Sequence[int] = (1, 5, 10),
) -> LegacyIJB1NResult:
    """Legacy insightface IJB 1:N (``recognition/_evaluation_/ijb/ijb_1n.py``), kept for comparison with old
    tables; use :func:`ijb_identification` for the standard open-set numbers. The galleries are concatenated
    (G1 then G2) and reduced to unique templates with their first subject, as ``ijb_1n.py`` does."""
    if not galleries:
        raise ValueError("no gallery given")
    all_templates = np.concatenate([np.asarray(t) for t, _ in galleries.values()])
    all_subjects = np.concatenate([np.asarray(s) for _, s in galleries.values()])
    gallery_feats, gallery_ids = _list_features(templates, (all_templates, all_subjects), "gallery lists")
    probe_feats, probe_ids = _list_features(templates, probe, "probe list")
    return legacy_insightface_1n_scores(probe_feats, probe_ids, gallery_feats, gallery_ids, fars=fars, ranks=ranks)
