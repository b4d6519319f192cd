"""IJB-B/C 1:N identification: the corrected open-set protocol of ``deepinsight/insightface:
recognition/_evaluation_/ijb/ijb_evals.py`` and the legacy ``ijb_1n.py`` numbers (docs/protocols.md,
'IJB-B / IJB-C').

The search itself (similarities, mated and best non-mated scores, ranks, TPIR) is the 1:N engine of
:mod:`qualiface.eval.search` with ``mate="first"``, shared with the TinyFace identification.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from qualiface.eval.ijb.pooling import TemplateFeatures
from qualiface.eval.ijb.results import GalleryIdentification, IJBIdentificationResult, LegacyIJB1NResult
from qualiface.eval.inputs import check_dims, check_ranks
from qualiface.eval.roc import threshold_at_fmr
from qualiface.eval.search import first_mate, search_gallery

INSIGHTFACE_1N_FARS: tuple[float, ...] = (*(float(10**x) for x in np.arange(-4, 0, 4 / 100)), 1.0)
"""``ijb_evals.py`` FAR grid: ``[10 ** x for x in np.arange(-4, 0, 4 / 100)] + [1]`` (101 values)."""


INSIGHTFACE_1N_SHOWN: tuple[float, ...] = INSIGHTFACE_1N_FARS[::25]
"""The FARs ``ijb_evals.py`` prints: 1e-4, 1e-3, 1e-2, 1e-1, 1."""


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
    check_dims(probe_feats, gallery_feats)
    ranks = check_ranks(ranks)
    far_grid = _check_fars(fars)
    mated = first_mate(probe_ids, gallery_ids) >= 0
    n_mated, n_nonmated = int(mated.sum()), int((~mated).sum())
    if n_mated == 0:
        raise ValueError(f"{name}: no probe subject appears in the gallery")
    if n_nonmated == 0:
        raise ValueError(f"{name}: every probe is mated; open-set TPIR needs non-mated probes")
    search = search_gallery(probe_feats, probe_ids, gallery_feats, gallery_ids, mate="first", block=block)
    rank_hits = {k: search.rank_hits(k) for k in ranks}
    # the non-mated probes' best scores (max over the gallery) are the impostor scores of the FPIR
    thresholds = threshold_at_fmr(search.nonmate_max[~search.mated], far_grid, rule="ijb_evals")
    tpir = search.detection_rate(thresholds, accept=">", within="nonmated")
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
    """IJB-B/C 1:N, corrected open-set version (docs/protocols.md, 'IJB-B / IJB-C';
    ``ijb_evals.py: run_model_test_1N``).

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
    ranks_t = check_ranks(ranks)
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
    ranks = check_ranks(ranks)
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
    n_probes, n_gallery = probe_ids.shape[0], gallery_ids.shape[0]
    need = [math.ceil(n_probes * far) for far in far_list]
    if max(need) > n_probes * (n_gallery - 1):
        available = n_probes * (n_gallery - 1)
        raise ValueError(f"FAR {max(far_list)} needs {max(need)} non-mated scores; there are {available}")
    # every probe subject is in the gallery once: the non-mated scores are all but the mate's
    search = search_gallery(
        probe_feats, probe_ids, gallery_feats, gallery_ids, mate="first", block=block, top_nonmated=max(need)
    )
    neg_desc = search.top_nonmated
    thresholds = {far: float(neg_desc[k - 1]) for far, k in zip(far_list, need, strict=True)}
    return LegacyIJB1NResult(
        protocol="legacy insightface ijb_1n.py (pooled non-mated scores; not the standard FPIR)",
        n_probes=int(n_probes),
        n_gallery=int(n_gallery),
        rank={k: search.rank_hits(k) / n_probes for k in ranks},
        tpir_at_fpir={far: int(np.count_nonzero(search.mate_score > thresholds[far])) / n_probes for far in far_list},
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
