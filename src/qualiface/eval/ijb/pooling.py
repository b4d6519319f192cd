"""Image features to template features (steps 1-4 of the IJB protocol; docs/protocols.md, 'IJB-B / IJB-C'),
the pooling variants, quality-weighted pooling, and per-template quality.

Quality-weighted pooling (CR-FIQA ``IJB-C Evaluation/eval_ijbc_qs.py``): each image's fused feature ``v`` is
multiplied by a weight from its quality score ``q`` before the media mean, in the place of the faceness score.
CR-FIQA's weight is the min-max scaled score ``w = (q - min q) / (max q - min q)``, min and max over every
evaluated image (the whole image list, not per template); it then divides by ``sum(w)``, a factor common to all
images that the template's L2 normalisation removes, so it is left out here. The lowest-quality image gets weight
0, so a template made only of such images pools to the zero vector; CR-FIQA's ``sklearn.preprocessing.normalize``
leaves it zero (it scores 0 against every template), and so does :func:`pool_templates` under min-max weights
(``TemplateFeatures.zero_templates`` lists them).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from qualiface.eval.fusion import FLIP_FUSION_MODES, FlipFusion, fuse_flip

ScoreType = Literal["cosine", "arccos"]
QualityWeights = Literal["minmax", "raw"]
QUALITY_WEIGHTS: tuple[str, ...] = get_args(QualityWeights)


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
        quality_weights: how per-image quality scores (``quality=``) become weights: ``"minmax"``
            (``(q - min q) / (max q - min q)`` over all the images pooled, CR-FIQA ``eval_ijbc_qs.py``; any
            quality scale, negative scores included; templates whose weights are all 0 are kept as zero vectors)
            or ``"raw"`` (the scores are the weights, non-negative, as given).
        requires_quality: the variant is quality-weighted: :func:`pool_templates` refuses to run without
            ``quality``.
    """

    flip_fusion: FlipFusion = "sum_raw"
    normalize_images: bool = False
    use_faceness: bool = True
    normalize_media: bool = False
    template_pool: Literal["sum", "mean"] = "sum"
    score: ScoreType = "cosine"
    quality_weights: QualityWeights = "minmax"
    requires_quality: bool = False

    def __post_init__(self) -> None:
        if self.flip_fusion not in FLIP_FUSION_MODES:
            raise ValueError(f"unknown flip_fusion {self.flip_fusion!r}")
        if self.template_pool not in ("sum", "mean"):
            raise ValueError(f"template_pool must be 'sum' or 'mean', got {self.template_pool!r}")
        if self.score not in ("cosine", "arccos"):
            raise ValueError(f"score must be 'cosine' or 'arccos', got {self.score!r}")
        if self.quality_weights not in QUALITY_WEIGHTS:
            raise ValueError(
                f"quality_weights must be one of {', '.join(QUALITY_WEIGHTS)}, got {self.quality_weights!r}"
            )


POOLING_PRESETS: dict[str, TemplatePooling] = {
    "insightface": TemplatePooling(),
    "adaface": TemplatePooling(use_faceness=False),
    "magface": TemplatePooling(
        flip_fusion="none", use_faceness=False, normalize_media=True, template_pool="mean", score="arccos"
    ),
    "magface_qlt": TemplatePooling(flip_fusion="none", use_faceness=False, template_pool="mean", score="arccos"),
    "cr_fiqa": TemplatePooling(flip_fusion="concat_normalised", use_faceness=False),
    "cr_fiqa_qs": TemplatePooling(use_faceness=False, quality_weights="minmax", requires_quality=True),
}
"""Named pooling variants: ``insightface`` (N1D1F1, default), ``adaface``, ``magface``, ``magface_qlt``, ``cr_fiqa``
(``ijb_qs_pair_file.py``) and ``cr_fiqa_qs`` (``eval_ijbc_qs.py``: flip sum, raw norm kept, no faceness, images
weighted by their min-max scaled quality; needs ``quality``)."""


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


def quality_weights(quality: np.ndarray, rule: QualityWeights | str = "minmax") -> np.ndarray:
    """Per-image pooling weights (float64) from per-image quality scores (module docstring).

    Args:
        quality: (N,) quality scores of the images pooled (higher = better; for an uncertainty pass its negative,
            whose min-max weights are CR-FIQA's ``1 - w`` for PFE).
        rule: ``"minmax"``: ``(q - min q) / (max q - min q)`` over all N (``ValueError`` when all are equal);
            ``"raw"``: ``q`` itself (``ValueError`` on a negative value).

    Raises:
        ValueError: an unknown rule, a non-finite score, or the rule's condition above, naming the image row.
    """
    if rule not in QUALITY_WEIGHTS:
        raise ValueError(f"quality_weights must be one of {', '.join(QUALITY_WEIGHTS)}, got {rule!r}")
    q = np.asarray(quality, dtype=np.float64)
    if q.ndim != 1 or q.shape[0] == 0:
        raise ValueError(f"quality must be a non-empty 1-D array, got shape {q.shape}")
    bad = ~np.isfinite(q) | ((q < 0) if rule == "raw" else False)
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        what = "negative or non-finite" if rule == "raw" else "non-finite"
        raise ValueError(f"quality: {int(np.sum(bad))} {what} value(s), first at image row {row}")
    if rule == "raw":
        return q
    low, high = float(q.min()), float(q.max())
    if high == low:
        raise ValueError(f"quality: all {q.shape[0]} values equal {low:g}; min-max weights are undefined")
    weights: np.ndarray = (q - low) / (high - low)
    return weights


def split_flip_halves(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views ``(f(x), f(flip x))`` of insightface-layout features ``[f(x), f(flip x)]`` of shape (N, 2D)."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] % 2:
        raise ValueError(f"features with flip halves must be (N, 2D), got shape {features.shape}")
    half = features.shape[1] // 2
    return features[:, :half], features[:, half:]


@dataclass
class TemplateFeatures:
    """L2-normalised template features, one row per template id (ascending, ``np.unique`` order).

    ``zero_templates`` holds the ids of templates kept as zero rows (all their min-max quality weights 0; they
    score 0 against every template)."""

    template_ids: np.ndarray
    features: np.ndarray
    media_per_template: np.ndarray
    zero_templates: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

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
        rows: np.ndarray = self.features[self.index_of(ids, source=source)]
        return rows


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
    if pooling.requires_quality and quality is None:
        raise ValueError("this pooling weights images by quality (requires_quality); pass quality, one per image")
    if faceness is not None:
        bad = ~np.isfinite(faceness) | (faceness < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"faceness: {int(bad.sum())} negative or non-finite value(s), first at image row {row}")


def _image_vectors(
    features: np.ndarray,
    flipped: np.ndarray | None,
    rows: np.ndarray,
    faceness: np.ndarray | None,
    weights: np.ndarray | None,
    pooling: TemplatePooling,
) -> np.ndarray:
    """Steps 1-3 (flip fusion, norm, faceness) and the quality weights for the given image rows, float64."""
    x = features[rows]
    xf = None if pooling.flip_fusion == "none" or flipped is None else flipped[rows]
    for name, part in (("features", x), ("flipped features", xf)):
        if part is None:
            continue
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            raise ValueError(f"{name}: NaN or inf at image row {int(rows[np.flatnonzero(~finite)[0]])}")
    # qualiface.eval.fusion (docs/protocols.md, '1:1 verification (10-fold)', flip fusion modes); "none" returns
    # its input as is, so cast for float64 pooling
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
    if weights is not None:
        scale *= weights[rows]
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
    """Template features from per-image features (docs/protocols.md, 'IJB-B / IJB-C';
    ``image2template_feature``), vectorised.

    Args:
        features: (N, D) raw image features ``f(x)`` (any float dtype; pooled in float64).
        template_ids, media_ids: (N,) integer ids from ``<x>_face_tid_mid.txt``.
        flipped: (N, D) features of the flipped images, needed unless ``flip_fusion="none"``
            (use :func:`split_flip_halves` for insightface's (N, 2D) layout).
        faceness: (N,) detector scores, needed when ``pooling.use_faceness``.
        quality: optional (N,) per-image quality scores (quality-weighted pooling): turned into weights by
            ``pooling.quality_weights`` (:func:`quality_weights`; min-max over these N images by default) and
            applied like faceness.
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
    weights = None if quality is None else quality_weights(quality, pooling.quality_weights)

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
        v = _image_vectors(features, flipped, rows, faceness, weights, pooling)
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
    if zero.any() and not (weights is not None and pooling.quality_weights == "minmax"):
        raise ValueError(
            f"{int(zero.sum())} template(s) pool to a zero vector (all weights zero?), "
            f"first: template {int(unique_templates[np.flatnonzero(zero)[0]])}"
        )
    template_sum /= np.where(zero, 1.0, norms)[:, None]  # zero rows stay zero (sklearn normalize, min-max weights)
    return TemplateFeatures(unique_templates, template_sum, media_per_template, unique_templates[zero])


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
