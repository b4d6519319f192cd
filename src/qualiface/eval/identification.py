"""1:N identification with rank-k (closed-set CMC) and open-set DIR at FPIR, TinyFace style.

Protocol (docs/protocols.md, 'TinyFace identification'; ``mk-minchul/AdaFace: validation_lq/tinyface_helper.py``,
whose ``DIR_FAR`` comes from ``seasonSH/Probabilistic-Face-Embeddings``):

- scores are inner products of **unit** probe and gallery features: each feature row is L2-normalised first
  (``normalize=True``, the default). AdaFace's ``validate_tinyface.py`` scores unit vectors: its model returns a
  unit embedding and its norm, and with flip test (``pre_norm_vector_add``) it L2-normalises the *sum* of the two
  raw embeddings, so normalisation comes after flip fusion, once per image. A feature row here is one image's
  (already fused) embedding, so normalising rows is that step. ``normalize=False`` scores the raw features (their
  norm then weighs in, which is not the protocol);
- a probe is *mated* when at least one gallery entry has its label; gallery distractors carry label ``-100`` and
  never mate (a probe may not use that label);
- **closed set** (CMC): only mated probes count; rank-k = fraction of them with a mate among the k highest
  scores of their row;
- **open set** (DIR at FPIR): the thresholds come from the non-mated probes' maximum scores: with
  ``n = round(n_nonmated * fpir)`` false alarms the threshold is the n-th largest of them (``max + 1e-5`` when
  ``n = 0``; :func:`qualiface.eval.roc.threshold_at_fmr`, ``rule="tinyface"``); DIR(k) = fraction of mated
  probes whose mated score is ``>=`` the threshold and that have a mate in the top k. The FPIR actually reached,
  ``mean(max non-mated score >= threshold)``, is returned too.

Ties count against the probe: a mate is in the top k when fewer than k non-mated entries score ``>=`` the best
mated score (the reference's ``argsort`` leaves ties unordered).

The search itself (similarities, mated and best non-mated scores, ranks, detection rates) is the 1:N engine of
:mod:`qualiface.eval.search` with ``mate="best"``, shared with the IJB 1:N.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qualiface.eval.inputs import check_dims, check_ranks
from qualiface.eval.results import Result
from qualiface.eval.roc import comparisons_needed, rate_measurable, threshold_at_fmr
from qualiface.eval.search import search_gallery

DISTRACTOR_LABEL = -100
"""Label of TinyFace gallery distractors (``labels_distractor = -100``)."""

TINYFACE_COUNTS: dict[str, int] = {"probes": 3_728, "gallery_matches": 4_443, "distractors": 153_428}
"""TinyFace test sizes from the paper (unverified; docs/protocols.md, 'TinyFace identification'); see
:func:`check_tinyface_counts`."""


def tinyface_key(path: str) -> str:
    """Image key: the file's basename without extension (``get_key``)."""
    return os.path.splitext(os.path.basename(path))[0]


def tinyface_label(path: str) -> int:
    """Identity label: ``int(basename.split('_')[0])`` (``get_label``); ``ValueError`` naming the path otherwise."""
    base = os.path.basename(path)
    try:
        return int(base.split("_")[0])
    except ValueError:
        raise ValueError(f"{path}: a TinyFace file name starts with '<identity>_', got {base!r}") from None


@dataclass
class TinyFaceLists:
    """Probe and gallery (matches then distractors) as rows of a feature matrix, with their labels."""

    probe_index: np.ndarray
    probe_labels: np.ndarray
    gallery_index: np.ndarray
    gallery_labels: np.ndarray
    n_matches: int
    n_distractors: int


def tinyface_lists(
    image_paths: Sequence[str],
    probe_paths: Sequence[str],
    match_paths: Sequence[str],
    distractor_paths: Sequence[str],
) -> TinyFaceLists:
    """Locate the probe, match and distractor images among the featurised ``image_paths`` by basename without
    extension, and label them (``tinyface_helper.init_proto``): probes and matches by :func:`tinyface_label`,
    distractors ``-100``; gallery = matches then distractors."""
    index: dict[str, int] = {}
    for i, path in enumerate(image_paths):
        key = tinyface_key(path)
        if key in index:
            raise ValueError(f"image list: key {key!r} occurs twice ({image_paths[index[key]]!r} and {path!r})")
        index[key] = i

    def rows(paths: Sequence[str], what: str) -> np.ndarray:
        missing = [p for p in paths if tinyface_key(p) not in index]
        if missing:
            raise ValueError(f"{what}: {len(missing)} image(s) have no features, first: {missing[0]!r}")
        return np.asarray([index[tinyface_key(p)] for p in paths], dtype=np.int64)

    probe_index = rows(probe_paths, "probe list")
    match_index = rows(match_paths, "gallery match list")
    distractor_index = rows(distractor_paths, "distractor list")
    return TinyFaceLists(
        probe_index=probe_index,
        probe_labels=np.asarray([tinyface_label(p) for p in probe_paths], dtype=np.int64),
        gallery_index=np.concatenate([match_index, distractor_index]),
        gallery_labels=np.concatenate(
            [
                np.asarray([tinyface_label(p) for p in match_paths], dtype=np.int64),
                np.full(len(distractor_paths), DISTRACTOR_LABEL, dtype=np.int64),
            ]
        ),
        n_matches=len(match_paths),
        n_distractors=len(distractor_paths),
    )


def check_tinyface_counts(lists: TinyFaceLists) -> None:
    """Assert the published TinyFace test sizes (:data:`TINYFACE_COUNTS`); ``ValueError`` lists the mismatches."""
    found = {
        "probes": lists.probe_index.shape[0],
        "gallery_matches": lists.n_matches,
        "distractors": lists.n_distractors,
    }
    wrong = [f"{k}: found {found[k]:,}, expected {v:,}" for k, v in TINYFACE_COUNTS.items() if found[k] != v]
    if wrong:
        raise ValueError("TinyFace sizes differ from the published ones: " + "; ".join(wrong))


@dataclass
class IdentificationResult(Result):
    """1:N identification: closed-set rank-k (CMC) and, when requested, open-set DIR at FPIR (fractions).

    ``cmc[k-1]`` is rank-k for k = 1 ... ``len(cmc)``; ``rank`` holds the requested ranks. ``dir_at_fpir[fpir][k]``
    is DIR at rank k, with ``fpir_actual`` and ``thresholds`` per FPIR. ``normalized`` says whether the features
    were L2-normalised before scoring (the protocol) or scored raw. ``fpir_measurable[fpir]`` is ``False``
    for an FPIR below ``1/n_nonmated`` (docs/protocols.md, 'Small samples'; the value is kept, a warning says so)
    and ``nonmated_needed[fpir]`` is ``ceil(1/fpir)``.
    """

    n_probes: int
    n_mated: int
    n_nonmated: int
    n_gallery: int
    n_distractors: int
    rank: dict[int, float]
    cmc: np.ndarray = field(repr=False)
    dir_at_fpir: dict[float, dict[int, float]] = field(default_factory=dict)
    fpir_actual: dict[float, float] = field(default_factory=dict)
    thresholds: dict[float, float] = field(default_factory=dict)
    fpir_measurable: dict[float, bool] = field(default_factory=dict)
    nonmated_needed: dict[float, int | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    normalized: bool = True

    def rows(self) -> list[dict[str, Any]]:
        """One row per rank of the CMC curve."""
        return [{"rank": k + 1, "identification_rate": float(v)} for k, v in enumerate(self.cmc)]


def _check(name: str, feats: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats)
    labels = np.asarray(labels)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"{name} features must be a non-empty (N, D) array, got shape {feats.shape}")
    if feats.dtype.kind not in "fiu":
        raise ValueError(f"{name} features must be numeric, got dtype {feats.dtype}")
    if labels.ndim != 1 or labels.shape[0] != feats.shape[0]:
        raise ValueError(f"{name}: {feats.shape[0]} feature rows but labels of shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name} labels must be integers, got dtype {labels.dtype}")
    finite = np.isfinite(feats).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} features: {bad.size} row(s) with NaN or inf, first row {int(bad[0])}")
    return feats, labels


def identification(
    probe_feats: np.ndarray,
    probe_labels: np.ndarray,
    gallery_feats: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ranks: Sequence[int] = (1, 5, 20),
    fpirs: Sequence[float] = (),
    normalize: bool = True,
    max_rank: int | None = None,
    block: int = 512,
) -> IdentificationResult:
    """Closed-set rank-k and open-set DIR at FPIR of probes against a gallery (see the module docstring).

    Args:
        probe_feats, gallery_feats: (P, D) and (G, D) features; scores are inner products (float64).
        probe_labels, gallery_labels: integer identities; gallery distractors use ``-100``.
        ranks: ranks reported in ``rank`` (TinyFace: 1, 5, 20).
        fpirs: open-set false positive identification rates in [0, 1); needs non-mated probes.
        normalize: L2-normalise each feature row before the inner product (default, the TinyFace protocol);
            ``False`` scores the raw features.
        max_rank: length of the CMC curve (default: the largest requested rank).
        block: probes scored at a time (memory: ``block x G`` float64).
    """
    probe_feats, probe_labels = _check("probe", probe_feats, probe_labels)
    gallery_feats, gallery_labels = _check("gallery", gallery_feats, gallery_labels)
    check_dims(probe_feats, gallery_feats)
    if (probe_labels == DISTRACTOR_LABEL).any():
        row = int(np.flatnonzero(probe_labels == DISTRACTOR_LABEL)[0])
        raise ValueError(f"probe row {row} has the distractor label {DISTRACTOR_LABEL}")
    ranks = check_ranks(tuple(int(k) for k in ranks))  # the message shows the ranks as a tuple
    length = max(ranks) if max_rank is None else int(max_rank)
    if length < max(ranks):
        raise ValueError(f"max_rank {length} is below the largest requested rank {max(ranks)}")
    fpir_list = [float(f) for f in fpirs]
    if any(not 0.0 <= f < 1.0 for f in fpir_list):
        raise ValueError(f"FPIR targets must be in [0, 1), got {fpir_list}")

    n_probes = probe_labels.shape[0]
    search = search_gallery(
        probe_feats, probe_labels, gallery_feats, gallery_labels, mate="best", normalize=normalize, block=block
    )
    n_mated = search.n_mated
    if n_mated == 0:
        raise ValueError("no probe has a mate in the gallery")
    cmc = np.array([search.rank_hits(k) / n_mated for k in range(1, length + 1)])
    result = IdentificationResult(
        n_probes=int(n_probes),
        n_mated=n_mated,
        n_nonmated=int(n_probes - n_mated),
        n_gallery=int(gallery_labels.shape[0]),
        n_distractors=int(np.count_nonzero(gallery_labels == DISTRACTOR_LABEL)),
        rank={k: float(cmc[k - 1]) for k in ranks},
        cmc=cmc,
        normalized=bool(normalize),
    )
    if fpir_list:
        nonmated_max = search.nonmate_max[~search.mated]
        if nonmated_max.size == 0:
            raise ValueError("open-set DIR at FPIR needs non-mated probes (probes without a mate in the gallery)")
        thresholds = threshold_at_fmr(nonmated_max, fpir_list, rule="tinyface")
        for fpir, threshold in zip(fpir_list, thresholds, strict=True):
            at = np.array([threshold])
            result.dir_at_fpir[fpir] = {k: float(search.detection_rate(at, accept=">=", within=k)[0]) for k in ranks}
            result.fpir_actual[fpir] = float(np.count_nonzero(nonmated_max >= threshold) / nonmated_max.size)
            result.thresholds[fpir] = float(threshold)
            result.fpir_measurable[fpir] = rate_measurable(fpir, int(nonmated_max.size))
            result.nonmated_needed[fpir] = comparisons_needed(fpir)
        unmeasured = [f"{f:g}" for f, ok in result.fpir_measurable.items() if not ok]
        if unmeasured:
            result.warnings.append(
                f"DIR at FPIR {', '.join(unmeasured)} cannot be measured on {nonmated_max.size:,} non-mated probes "
                f"(the smallest measurable FPIR is 1/{nonmated_max.size:,}); kept but marked not measurable"
            )
    return result


def tinyface_identification(
    features: np.ndarray, lists: TinyFaceLists, *, ranks: Sequence[int] = (1, 5, 20), normalize: bool = True
) -> IdentificationResult:
    """TinyFace rank-k (closed set): :func:`identification` of the listed probe rows against matches+distractors,
    on unit features unless ``normalize=False``."""
    features = np.asarray(features)
    return identification(
        features[lists.probe_index],
        lists.probe_labels,
        features[lists.gallery_index],
        lists.gallery_labels,
        ranks=ranks,
        normalize=normalize,
    )
