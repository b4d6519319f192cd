"""IJB-B/C: meta readers, template pooling, block scoring, 1:1 TAR@FAR and 1:N against loop references."""

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics

from qualiface.data.ijb import (
    IJB_COUNTS,
    check_ijb_counts,
    load_ijb_1n_lists,
    load_ijb_meta,
    read_face_tid_mid,
    read_name_5pts_score,
    read_template_pairs,
    read_template_subject_csv,
    template_subjects,
)
from qualiface.eval.ijb import (
    INSIGHTFACE_1N_FARS,
    INSIGHTFACE_1N_SHOWN,
    POOLING_PRESETS,
    TemplatePooling,
    ijb_identification,
    ijb_verification,
    legacy_insightface_1n,
    legacy_insightface_1n_scores,
    open_set_identification,
    pool_templates,
    score_template_pairs,
    score_template_pairs_gather,
    split_flip_halves,
    template_quality,
)

# ------------------------------------------------------------------------------------------- synthetic data


def synthetic_ijb(seed: int = 0, n_templates: int = 40, n_subjects: int = 12, dim: int = 16):
    """IJB-like images: templates of 1-4 media, media are stills or videos of 2-5 frames, raw norms and
    faceness vary, a few media ids are shared by two templates, ids are non-contiguous, rows are shuffled."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_subjects, dim))
    template_ids = rng.choice(np.arange(1, 100_000), size=n_templates, replace=False)
    template_subject = rng.integers(0, n_subjects, size=n_templates)
    rows_t, rows_m, rows_s = [], [], []
    next_media = 5000
    shared_media = None
    for t, s in zip(template_ids, template_subject, strict=True):
        for _ in range(rng.integers(1, 5)):
            if shared_media is not None and rng.random() < 0.15:
                media = shared_media  # the same media id in another template: grouped per template
            else:
                media = next_media
                next_media += int(rng.integers(1, 7))
            shared_media = media
            frames = 1 if rng.random() < 0.5 else int(rng.integers(2, 6))
            rows_t += [t] * frames
            rows_m += [media] * frames
            rows_s += [s] * frames
    n = len(rows_t)
    order = rng.permutation(n)
    tids = np.asarray(rows_t, dtype=np.int64)[order]
    mids = np.asarray(rows_m, dtype=np.int64)[order]
    subj = np.asarray(rows_s)[order]
    scale = rng.uniform(0.3, 3.0, size=(n, 1))
    feats = ((centers[subj] + 0.9 * rng.normal(size=(n, dim))) * scale).astype(np.float32)
    flipped = ((centers[subj] + 0.9 * rng.normal(size=(n, dim))) * scale).astype(np.float32)
    faceness = rng.uniform(0.05, 1.0, size=n).astype(np.float32)
    subject_of = dict(zip(template_ids.tolist(), template_subject.tolist(), strict=True))
    return feats, flipped, tids, mids, faceness, subject_of


def reference_templates(feats, flipped, tids, mids, faceness, quality, pooling: TemplatePooling):
    """Template scores (docs/protocols.md, 'IJB-B / IJB-C') as nested loops in float64: per template (ascending),
    per media, per image."""
    out = {}
    for t in sorted(set(tids.tolist())):
        media_feats = []
        for m in sorted(set(mids[tids == t].tolist())):
            vectors = []
            for i in np.flatnonzero((tids == t) & (mids == m)):
                f = feats[i].astype(np.float64)
                g = flipped[i].astype(np.float64)
                if pooling.flip_fusion == "none":
                    v = f
                elif pooling.flip_fusion == "sum_raw":
                    v = f + g
                elif pooling.flip_fusion == "norm_weighted_avg":
                    v = (f + g) / np.linalg.norm(f + g) * (np.linalg.norm(f) + np.linalg.norm(g)) / 2
                else:
                    v = np.concatenate([f / np.linalg.norm(f), g / np.linalg.norm(g)])
                if pooling.normalize_images:
                    v = v / np.linalg.norm(v)
                if pooling.use_faceness:
                    v = v * float(faceness[i])
                if quality is not None:
                    v = v * float(quality[i])
                vectors.append(v)
            media = sum(vectors) / len(vectors)
            if pooling.normalize_media:
                media = media / np.linalg.norm(media)
            media_feats.append(media)
        template = sum(media_feats)
        if pooling.template_pool == "mean":
            template = template / len(media_feats)
        out[t] = template / np.linalg.norm(template)
    return out


def all_pairs(template_ids, subject_of, seed=0, n_random=0):
    """Bipartite gallery x probe pairs (first third x the rest) plus optional random pairs, labels by subject."""
    rng = np.random.default_rng(seed)
    ids = np.sort(np.asarray(template_ids))
    gallery, probe = ids[: len(ids) // 3], ids[len(ids) // 3 :]
    t1, t2 = (x.ravel() for x in np.meshgrid(gallery, probe, indexing="ij"))
    if n_random:
        t1 = np.r_[t1, rng.choice(ids, n_random)]
        t2 = np.r_[t2, rng.choice(ids, n_random)]
    labels = np.array([subject_of[a] == subject_of[b] for a, b in zip(t1, t2, strict=True)], dtype=np.int64)
    return t1, t2, labels


# ------------------------------------------------------------------------------------------------- pooling


VARIANTS = {  # the quality-weighted presets: tests/eval/test_ijb_quality_pooling.py
    **{name: pooling for name, pooling in POOLING_PRESETS.items() if not pooling.requires_quality},
    "normalised_images": TemplatePooling(normalize_images=True),
    "no_flip_faceness": TemplatePooling(flip_fusion="none"),
    "norm_weighted_avg": TemplatePooling(flip_fusion="norm_weighted_avg", normalize_media=True),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pool_templates_matches_loop_reference(name):
    pooling = VARIANTS[name]
    feats, flipped, tids, mids, faceness, _ = synthetic_ijb(seed=1)
    ours = pool_templates(feats, tids, mids, flipped=flipped, faceness=faceness, pooling=pooling, progress=False)
    ref = reference_templates(feats, flipped, tids, mids, faceness, None, pooling)
    np.testing.assert_array_equal(ours.template_ids, sorted(ref))
    np.testing.assert_allclose(ours.features, np.stack([ref[t] for t in sorted(ref)]), rtol=0, atol=1e-12)


def test_quality_weighted_pooling_matches_loop_reference():
    feats, flipped, tids, mids, faceness, _ = synthetic_ijb(seed=2)
    quality = np.random.default_rng(0).uniform(0.0, 2.0, size=len(tids))
    pooling = TemplatePooling(quality_weights="raw")  # the scores as weights; min-max: test_ijb_quality_pooling.py
    ours = pool_templates(
        feats, tids, mids, flipped=flipped, faceness=faceness, quality=quality, pooling=pooling, progress=False
    )
    ref = reference_templates(feats, flipped, tids, mids, faceness, quality, pooling)
    np.testing.assert_allclose(ours.features, np.stack([ref[t] for t in sorted(ref)]), rtol=0, atol=1e-12)
    plain = pool_templates(feats, tids, mids, flipped=flipped, faceness=faceness, progress=False)
    assert not np.allclose(plain.features, ours.features)  # the weights do change the templates


def test_pooling_does_not_depend_on_chunking_or_image_order():
    feats, flipped, tids, mids, faceness, _ = synthetic_ijb(seed=3)
    kwargs = {"flipped": flipped, "faceness": faceness, "progress": False}
    big = pool_templates(feats, tids, mids, **kwargs)
    small = pool_templates(feats, tids, mids, chunk_size=5, **kwargs)
    perm = np.random.default_rng(1).permutation(len(tids))
    shuffled = pool_templates(
        feats[perm], tids[perm], mids[perm], flipped=flipped[perm], faceness=faceness[perm], progress=False
    )
    np.testing.assert_allclose(small.features, big.features, rtol=0, atol=1e-13)
    np.testing.assert_allclose(shuffled.features, big.features, rtol=0, atol=1e-13)


def test_media_weighting_gives_each_media_equal_weight():
    # Template with a 1-frame still (feature a) and a 3-frame video (b, b, b): template ~ a + b, not a + 3b.
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    feats = np.stack([a, b, b, b]).astype(np.float32)
    tids = np.array([7, 7, 7, 7])
    mids = np.array([1, 2, 2, 2])
    out = pool_templates(feats, tids, mids, pooling=TemplatePooling(flip_fusion="none", use_faceness=False))
    np.testing.assert_allclose(out.features[0], [1 / np.sqrt(2), 1 / np.sqrt(2)], atol=1e-15)
    assert out.media_per_template.tolist() == [2]


def test_split_flip_halves_is_the_insightface_layout():
    feats, flipped, tids, mids, faceness, _ = synthetic_ijb(seed=4)
    first, second = split_flip_halves(np.concatenate([feats, flipped], axis=1))
    a = pool_templates(first, tids, mids, flipped=second, faceness=faceness, progress=False)
    b = pool_templates(feats, tids, mids, flipped=flipped, faceness=faceness, progress=False)
    np.testing.assert_array_equal(a.features, b.features)
    with pytest.raises(ValueError, match="2D"):
        split_flip_halves(np.zeros((3, 5)))


def test_template_quality_min_max_mean():
    q = np.array([0.5, 0.2, 0.9, 0.4])
    tids = np.array([3, 1, 3, 1])
    assert [x.tolist() for x in template_quality(q, tids)] == [[1, 3], [0.2, 0.5]]
    assert template_quality(q, tids, reduce="max")[1].tolist() == [0.4, 0.9]
    np.testing.assert_allclose(template_quality(q, tids, reduce="mean")[1], [0.3, 0.7])


# ------------------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("layout", ["bipartite", "random", "mixed"])
@pytest.mark.parametrize("max_block_bytes", [256, 1 << 30])
def test_block_scoring_equals_row_gather(layout, max_block_bytes):
    rng = np.random.default_rng(0)
    n, dim = 1000, 24  # with 256-byte blocks: 64 rows a block, up to 16 blocks (both grouping paths)
    templates = rng.normal(size=(n, dim))
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    if layout == "bipartite":
        a, b = np.meshgrid(rng.choice(n, 300, replace=False), rng.choice(n, 60, replace=False), indexing="ij")
        idx1, idx2 = a.ravel(), b.ravel()
    elif layout == "random":
        idx1, idx2 = rng.integers(0, n, 20000), rng.integers(0, n, 20000)
    else:
        idx1 = np.r_[rng.integers(0, 20, 5000), rng.integers(0, n, 5000)]
        idx2 = rng.integers(0, n, 10000)
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-6)):
        block = score_template_pairs(templates, idx1, idx2, dtype=dtype, max_block_bytes=max_block_bytes)
        gather = score_template_pairs_gather(templates, idx1, idx2, dtype=np.float64)
        loop = np.array([templates[i] @ templates[j] for i, j in zip(idx1[:200], idx2[:200], strict=True)])
        assert block.dtype == dtype
        np.testing.assert_allclose(block, gather, rtol=0, atol=tol)
        np.testing.assert_allclose(block[:200], loop, rtol=0, atol=tol)


def test_block_scoring_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="out of range"):
        score_template_pairs(np.eye(3), np.array([0, 3]), np.array([1, 1]))


# ------------------------------------------------------------------------------------------------- 1:1


def _reference_tar(feats, flipped, tids, mids, faceness, pooling, t1, t2, labels, fars):
    ref = reference_templates(feats, flipped, tids, mids, faceness, None, pooling)
    scores = np.array([ref[a] @ ref[b] for a, b in zip(t1.tolist(), t2.tolist(), strict=True)])
    if pooling.score == "arccos":
        scores = 1 - np.arccos(np.clip(scores, -1, 1)) / np.pi
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    out = {}
    for far in fars:  # insightface: reversed arrays, min over (|fpr - x|, index)
        rf, rt = np.flipud(fpr), np.flipud(tpr)
        _, i = min(zip(abs(rf - far), range(len(rf)), strict=True))
        out[far] = rt[i]
    return out, metrics.auc(fpr, tpr)


@pytest.mark.parametrize("preset", ["insightface", "adaface", "magface"])
def test_ijb_verification_matches_reference_pipeline(preset):
    feats, flipped, tids, mids, faceness, subject_of = synthetic_ijb(seed=5, n_templates=60)
    t1, t2, labels = all_pairs(np.unique(tids), subject_of, n_random=300)
    fars = (1e-3, 1e-2, 0.05, 0.1, 0.3)
    result = ijb_verification(
        feats, tids, mids, t1, t2, labels, flipped=flipped, faceness=faceness, pooling=preset, fars=fars,
        dtype=np.float64, progress=False,
    )  # fmt: skip
    expected, expected_auc = _reference_tar(
        feats, flipped, tids, mids, faceness, POOLING_PRESETS[preset], t1, t2, labels, fars
    )
    assert result.tar_at_far == pytest.approx(expected, abs=1e-12)
    assert result.auc == pytest.approx(expected_auc, abs=1e-12)
    assert (result.n_pairs, result.n_genuine) == (len(labels), int(labels.sum()))
    assert result.n_templates == len(np.unique(tids))
    assert result.score_type == POOLING_PRESETS[preset].score
    assert [row["far"] for row in result.rows()] == list(fars)
    assert result.to_dict()["pooling"]["use_faceness"] == POOLING_PRESETS[preset].use_faceness


def test_verification_result_exports(tmp_path):
    feats, flipped, tids, mids, faceness, subject_of = synthetic_ijb(seed=6)
    t1, t2, labels = all_pairs(np.unique(tids), subject_of)
    result = ijb_verification(feats, tids, mids, t1, t2, labels, flipped=flipped, faceness=faceness, progress=False)
    data = result.to_dict()
    assert set(data["tar_at_far"]) == {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"}
    assert len(data["roc_fpr"]) == len(data["roc_tpr"]) > 2
    assert "TAR:" in result.summary()
    text = result.to_csv(tmp_path / "tar.csv").read_text().splitlines()
    assert text[0] == "far,tar_nearest,tar_conservative,measurable"
    assert len(text) == 7


def test_pairs_naming_templates_without_images_raise():
    feats, flipped, tids, mids, faceness, subject_of = synthetic_ijb(seed=7)
    t1, t2, labels = all_pairs(np.unique(tids), subject_of)
    t2 = t2.copy()
    t2[5] = 999_999
    with pytest.raises(ValueError, match=r"second template.*1 entr.*template 999999"):
        ijb_verification(feats, tids, mids, t1, t2, labels, flipped=flipped, faceness=faceness, progress=False)


def test_nan_features_raise_naming_the_row():
    feats, flipped, tids, mids, faceness, _ = synthetic_ijb(seed=8)
    feats[11, 3] = np.nan
    with pytest.raises(ValueError, match="features: NaN or inf at image row 11"):
        pool_templates(feats, tids, mids, flipped=flipped, faceness=faceness, progress=False)


def test_mismatched_lengths_and_missing_inputs_raise():
    feats, flipped, tids, mids, faceness, subject_of = synthetic_ijb(seed=9)
    with pytest.raises(ValueError, match="media_ids must be 1-D with one entry per image"):
        pool_templates(feats, tids, mids[:-1], flipped=flipped, faceness=faceness)
    with pytest.raises(ValueError, match="needs faceness"):
        pool_templates(feats, tids, mids, flipped=flipped)
    with pytest.raises(ValueError, match="needs the flipped features"):
        pool_templates(feats, tids, mids, faceness=faceness)
    with pytest.raises(ValueError, match="faceness: 1 negative or non-finite"):
        pool_templates(feats, tids, mids, flipped=flipped, faceness=np.where(np.arange(len(tids)) == 2, -1, faceness))
    t1, t2, labels = all_pairs(np.unique(tids), subject_of)
    with pytest.raises(ValueError, match="pair columns differ in length"):
        ijb_verification(feats, tids, mids, t1, t2, labels[:-1], flipped=flipped, faceness=faceness)
    with pytest.raises(ValueError, match="unknown pooling preset"):
        pool_templates(feats, tids, mids, pooling="arcface")


def test_all_zero_weights_raise_naming_the_template():
    feats, flipped, tids, mids, faceness, _ = synthetic_ijb(seed=10)
    faceness = faceness.copy()
    faceness[tids == tids[0]] = 0.0
    with pytest.raises(ValueError, match=f"first: template {tids[0]}"):
        pool_templates(feats, tids, mids, flipped=flipped, faceness=faceness, progress=False)


# ------------------------------------------------------------------------------------------------- 1:N


def _evaluation_1n_reference(query_feats, gallery_feats, query_ids, reg_ids, fars):
    """ijb_evals.py evaluation_1N transcribed with loops."""
    similarity = query_feats @ gallery_feats.T
    top = {1: 0, 5: 0, 10: 0}
    pos_sims, neg_sims, non_gallery = [], [], []
    for index, query_id in enumerate(query_ids):
        if query_id in reg_ids:
            gallery_label = np.argwhere(reg_ids == query_id)[0, 0]
            index_sorted = np.argsort(similarity[index])[::-1]
            for k in top:
                top[k] += gallery_label in index_sorted[:k]
            pos_sims.append(similarity[index][reg_ids == query_id][0])
            neg_sims.append(similarity[index][reg_ids != query_id])
        else:
            non_gallery.append(similarity[index])
    pos_sims, neg_sims, non_gallery = np.array(pos_sims), np.array(neg_sims), np.array(non_gallery)
    correct = pos_sims > neg_sims.max(1)
    sorted_max = np.sort(non_gallery.max(1))[::-1]
    recalls, threshes = [], []
    for far in fars:
        thresh = sorted_max[max(int(sorted_max.shape[0] * far) - 1, 0)]
        recalls.append(np.logical_and(correct, pos_sims > thresh).sum() / pos_sims.shape[0])
        threshes.append(thresh)
    return top, np.array(recalls), np.array(threshes)


def _identification_data(seed, n_probe=80, n_gallery=25, dim=12, n_subjects=50):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_subjects, dim))
    gallery_ids = rng.choice(n_subjects, n_gallery, replace=False)
    probe_ids = rng.integers(0, n_subjects, n_probe)
    gallery = centers[gallery_ids] + 0.7 * rng.normal(size=(n_gallery, dim))
    probe = centers[probe_ids] + 0.7 * rng.normal(size=(n_probe, dim))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    return probe, probe_ids, gallery, gallery_ids


@pytest.mark.parametrize("seed", range(3))
def test_open_set_identification_matches_evaluation_1n_loops(seed):
    probe, probe_ids, gallery, gallery_ids = _identification_data(seed)
    fars = list(INSIGHTFACE_1N_FARS)
    result = open_set_identification(probe, probe_ids, gallery, gallery_ids, fars=fars, block=17)
    top, recalls, threshes = _evaluation_1n_reference(probe, gallery, probe_ids, gallery_ids, fars)
    assert result.rank_hits == top
    assert result.n_mated + result.n_nonmated == len(probe_ids)
    np.testing.assert_allclose(result.tpir, recalls, rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.thresholds, threshes, rtol=0, atol=1e-14)
    assert 0 < result.rank[1] <= result.rank[5] <= result.rank[10] <= 1


def test_insightface_far_grid():
    assert len(INSIGHTFACE_1N_FARS) == 101
    assert pytest.approx((1e-4, 1e-3, 1e-2, 1e-1, 1.0), rel=1e-12) == INSIGHTFACE_1N_SHOWN


def _template_table(seed=11):
    """Pooled templates plus G1/G2/probe lists with repeated CSV lines, as the IJB 1:N files have them."""
    feats, flipped, tids, mids, faceness, subject_of = synthetic_ijb(seed=seed, n_templates=70, n_subjects=30)
    templates = pool_templates(feats, tids, mids, flipped=flipped, faceness=faceness, progress=False)
    ids = templates.template_ids
    subjects = np.array([subject_of[t] for t in ids.tolist()])
    first_of = {}
    for t, s in zip(ids.tolist(), subjects.tolist(), strict=True):
        first_of.setdefault(s, t)
    gallery_templates = np.array(sorted(first_of.values()))
    half = len(gallery_templates) // 2
    g1, g2 = gallery_templates[:half], gallery_templates[half:]
    probe_t = np.array([t for t in ids.tolist() if t not in set(gallery_templates.tolist())])

    def listed(tt):
        tt = np.repeat(tt, 2)  # one CSV line per image: templates repeat
        return tt, np.array([subject_of[t] for t in tt.tolist()])

    return templates, {"G1": listed(g1), "G2": listed(g2)}, listed(probe_t)


def test_ijb_identification_averages_galleries_like_insightface():
    templates, galleries, probe = _template_table()
    result = ijb_identification(templates, galleries, probe)
    assert set(result.galleries) == {"G1", "G2"}
    probe_ids, probe_subjects = template_subjects(*probe)
    probe_feats = templates.rows(probe_ids)
    n_probes = len(probe_ids)
    hits = {1: 0, 5: 0, 10: 0}
    recalls = []
    for name, (gt, gs) in galleries.items():
        g_ids, g_subjects = template_subjects(gt, gs)
        top, rec, _ = _evaluation_1n_reference(
            probe_feats, templates.rows(g_ids), probe_subjects, g_subjects, list(INSIGHTFACE_1N_FARS)
        )
        for k in hits:
            hits[k] += top[k]
        recalls.append(rec)
        assert result.galleries[name].n_mated + result.galleries[name].n_nonmated == n_probes
    assert result.rank == pytest.approx({k: v / n_probes for k, v in hits.items()})
    np.testing.assert_allclose(result.tpir, (recalls[0] + recalls[1]) / 2, atol=1e-15)
    assert list(result.tpir_at_fpir) == list(INSIGHTFACE_1N_SHOWN)
    assert len(result.rows()) == 101
    assert "threshold_G2" in result.rows()[0]


def _legacy_reference(query_feats, gallery_feats, query_ids, reg_ids, fars):
    """ijb_1n.py gen_mask + evaluation transcribed with loops."""
    mask = []
    for query_id in query_ids:
        pos = [i for i, x in enumerate(reg_ids) if query_id == x]
        if len(pos) != 1:
            raise RuntimeError(f"RegIdsError with id = {query_id}, duplicate = {len(pos)}")
        mask.append(pos[0])
    similarity = query_feats @ gallery_feats.T
    query_num = similarity.shape[0]
    top_inds = np.argsort(-similarity)
    tops = {k: sum(mask[i] in top_inds[i, :k] for i in range(query_num)) / query_num for k in (1, 5, 10)}
    required = [math.ceil(query_num * x) for x in fars]
    top_sims = similarity.copy()
    pos_sims = []
    for i in range(query_num):
        pos_sims.append(top_sims[i, mask[i]])
        top_sims[i, mask[i]] = -2.0
    neg = sorted(top_sims[np.where(top_sims > -2.0)].tolist(), reverse=True)
    out = {}
    for far, k in zip(fars, required, strict=True):
        th = neg[k - 1]
        out[far] = (np.sum(np.array(pos_sims) > th) / query_num, th)
    return tops, out


@pytest.mark.parametrize("seed", range(3))
def test_legacy_1n_matches_ijb_1n_loops(seed):
    rng = np.random.default_rng(seed)
    n_subjects, dim = 30, 10
    centers = rng.normal(size=(n_subjects, dim))
    gallery_ids = rng.permutation(n_subjects)
    probe_ids = rng.integers(0, n_subjects, 90)
    gallery = centers[gallery_ids] + 0.8 * rng.normal(size=(n_subjects, dim))
    probe = centers[probe_ids] + 0.8 * rng.normal(size=(90, dim))
    fars = [0.01, 0.1, 0.35]
    result = legacy_insightface_1n_scores(probe, probe_ids, gallery, gallery_ids, fars=fars, block=13)
    tops, expected = _legacy_reference(probe, gallery, probe_ids, gallery_ids, fars)
    assert result.rank == pytest.approx(tops, abs=1e-15)
    for far in fars:
        assert result.tpir_at_fpir[far] == pytest.approx(expected[far][0], abs=1e-15)
        assert result.thresholds[far] == pytest.approx(expected[far][1], abs=1e-13)


def test_legacy_1n_requires_each_probe_subject_exactly_once():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(4, 5))
    probe = rng.normal(size=(3, 5))
    with pytest.raises(RuntimeError):
        _legacy_reference(probe, gallery, np.array([1, 2, 3]), np.array([1, 2, 2, 4]), [0.1])
    with pytest.raises(ValueError, match=r"subject 2 \(probe row 1\) appears 2 times"):
        legacy_insightface_1n_scores(probe, np.array([1, 2, 4]), gallery, np.array([1, 2, 2, 4]))
    with pytest.raises(ValueError, match=r"subject 9 \(probe row 2\) appears 0 times"):
        legacy_insightface_1n_scores(probe, np.array([1, 4, 9]), gallery, np.array([1, 2, 3, 4]))


def test_legacy_1n_on_ijb_lists_concatenates_galleries():
    templates, galleries, probe = _template_table(seed=12)
    result = legacy_insightface_1n(templates, galleries, probe)
    assert result.n_gallery == len(np.unique(np.concatenate([t for t, _ in galleries.values()])))
    assert result.n_probes == len(np.unique(probe[0]))
    assert 0 <= result.tpir_at_fpir[0.01] <= result.tpir_at_fpir[0.1] <= 1


def test_open_set_identification_errors():
    probe, probe_ids, gallery, gallery_ids = _identification_data(0)
    with pytest.raises(ValueError, match="every probe is mated"):
        open_set_identification(probe, np.full(len(probe), gallery_ids[0]), gallery, gallery_ids)
    with pytest.raises(ValueError, match="no probe subject"):
        open_set_identification(probe, probe_ids + 1000, gallery, gallery_ids)
    bad = probe.copy()
    bad[4, 0] = np.nan
    with pytest.raises(ValueError, match="probe features: NaN or inf in row 4"):
        open_set_identification(bad, probe_ids, gallery, gallery_ids)
    with pytest.raises(ValueError, match="30 feature rows"):
        open_set_identification(probe[:30], probe_ids, gallery, gallery_ids)


def test_identification_lists_with_unknown_templates_raise():
    templates, galleries, probe = _template_table(seed=13)
    bad_probe = (np.r_[probe[0], 424_242], np.r_[probe[1], 0])
    with pytest.raises(ValueError, match=r"probe list.*template 424242"):
        ijb_identification(templates, galleries, bad_probe)


# ------------------------------------------------------------------------------------------------- readers


def write_meta(root: Path, subset: str = "IJBC", seed: int = 0):
    """A tiny IJB meta folder written from synthetic data; returns (meta_dir, data)."""
    feats, flipped, tids, mids, faceness, subject_of = synthetic_ijb(seed=seed)
    meta = root / subset / "meta"
    meta.mkdir(parents=True)
    x = subset.lower()
    names = [f"{i + 1}.jpg" for i in range(len(tids))]
    rng = np.random.default_rng(seed)
    lmk = rng.uniform(20, 100, size=(len(tids), 10))
    (meta / f"{x}_face_tid_mid.txt").write_text(
        "".join(f"{n} {t} {m}\n" for n, t, m in zip(names, tids, mids, strict=True))
    )
    (meta / f"{x}_name_5pts_score.txt").write_text(
        "".join(
            f"{n} {' '.join(f'{v:.3f}' for v in row)} {s:.3f}\n" for n, row, s in zip(names, lmk, faceness, strict=True)
        )
    )
    t1, t2, labels = all_pairs(np.unique(tids), subject_of)
    (meta / f"{x}_template_pair_label.txt").write_text(
        "".join(f"{a} {b} {c}\n" for a, b, c in zip(t1, t2, labels, strict=True))
    )
    _, galleries, probe = _lists_for(np.unique(tids), subject_of)
    files = {"IJBC": ("G1", "G2"), "IJBB": ("S1", "S2")}[subset]
    for key, (gt, gs) in zip(files, galleries, strict=True):
        (meta / f"{x}_1N_gallery_{key}.csv").write_text(
            "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{s},img/{t}.jpg\n" for t, s in zip(gt, gs, strict=True))
        )
    (meta / f"{x}_1N_probe_mixed.csv").write_text(
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{s},x.jpg\n" for t, s in zip(*probe, strict=True))
    )
    data = {"feats": feats, "flipped": flipped, "tids": tids, "mids": mids, "faceness": faceness, "t1": t1}
    data.update({"t2": t2, "labels": labels, "names": names, "landmarks": lmk, "subject_of": subject_of})
    return meta, data


def _lists_for(ids, subject_of):
    first_of = {}
    for t in ids.tolist():
        first_of.setdefault(subject_of[t], t)
    gallery = sorted(first_of.values())
    half = len(gallery) // 2
    probe = [t for t in ids.tolist() if t not in set(gallery)]

    def listed(tt):
        return np.repeat(tt, 2), np.repeat([subject_of[t] for t in tt], 2)

    return None, [listed(gallery[:half]), listed(gallery[half:])], listed(probe)


def test_readers_round_trip_a_written_meta_folder(tmp_path):
    meta_dir, data = write_meta(tmp_path)
    meta = load_ijb_meta(meta_dir)
    assert meta.subset == "IJBC"
    assert meta.image_names.tolist() == data["names"]
    np.testing.assert_array_equal(meta.template_ids, data["tids"])
    np.testing.assert_array_equal(meta.media_ids, data["mids"])
    np.testing.assert_allclose(meta.faceness, np.round(data["faceness"], 3), atol=1e-6)
    assert meta.faceness.dtype == np.float32
    assert meta.landmarks.shape == (len(data["tids"]), 5, 2)
    np.testing.assert_allclose(meta.landmarks.reshape(-1, 10), np.round(data["landmarks"], 3), atol=1e-4)
    np.testing.assert_array_equal(meta.pair_t1, data["t1"])
    np.testing.assert_array_equal(meta.pair_labels, data["labels"])
    lists = load_ijb_1n_lists(meta_dir)
    assert set(lists.galleries) == {"G1", "G2"}
    assert lists.counts()["probe_templates"] == len(np.unique(lists.probe[0]))


def test_ijbb_gallery_files_are_s1_s2(tmp_path):
    meta_dir, _ = write_meta(tmp_path, subset="IJBB")
    assert set(load_ijb_1n_lists(meta_dir).galleries) == {"S1", "S2"}


def test_reader_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "ijbc_template_pair_label.txt"
    bad.write_text("1 2 1\n3 4 0\n5 x 1\n")
    with pytest.raises(ValueError, match=r"ijbc_template_pair_label.txt: line 3, column 2: cannot parse 'x'"):
        read_template_pairs(bad)
    bad.write_text("1 2 1\n3 4 0 9\n")
    with pytest.raises(ValueError, match=r"line 2: 4 fields, expected 3"):
        read_template_pairs(bad)
    bad.write_text("1 2 1\n\n3 4 2\n")
    with pytest.raises(ValueError, match=r"line 3: label 2 is not 0 or 1"):
        read_template_pairs(bad)
    tid = tmp_path / "ijbc_face_tid_mid.txt"
    tid.write_text("1.jpg 1 5\n2.jpg 1 five\n")
    with pytest.raises(ValueError, match=r"ijbc_face_tid_mid.txt: line 2, column 3: cannot parse 'five'"):
        read_face_tid_mid(tid)
    pts = tmp_path / "ijbc_name_5pts_score.txt"
    pts.write_text("1.jpg " + " ".join(["1.0"] * 10) + " nan\n")
    with pytest.raises(ValueError, match=r"line 1, column 12: non-finite"):
        read_name_5pts_score(pts)
    csv_file = tmp_path / "g.csv"
    csv_file.write_text("TEMPLATE_ID,SUBJECT_ID\n1,2\n3,abc\n")
    with pytest.raises(ValueError, match=r"g.csv: line 3: template or subject id"):
        read_template_subject_csv(csv_file)
    with pytest.raises(FileNotFoundError, match=r"missing.txt: no such file"):
        read_template_pairs(tmp_path / "missing.txt")


def test_meta_files_listing_different_images_raise(tmp_path):
    meta_dir, _ = write_meta(tmp_path)
    pts = meta_dir / "ijbc_name_5pts_score.txt"
    lines = pts.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("4.jpg", "40.jpg", 1)
    pts.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"different images at data row 4: '4.jpg' and '40.jpg'"):
        load_ijb_meta(meta_dir)


def test_missing_meta_dir_and_conflicting_subjects_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected one of"):
        load_ijb_meta(tmp_path)
    with pytest.raises(ValueError, match="template 5 is listed with subjects 1 and 2"):
        template_subjects(np.array([5, 6, 5]), np.array([1, 3, 2]))


def test_count_check_lists_every_mismatch(tmp_path):
    meta_dir, _ = write_meta(tmp_path)
    meta = load_ijb_meta(meta_dir)
    with pytest.raises(ValueError, match=r"images: found .*expected 469,375.*pairs: found"):
        check_ijb_counts("IJBC", meta.counts())
    with pytest.raises(ValueError, match="sizes differ"):
        load_ijb_meta(meta_dir, check_counts=True)
    check_ijb_counts("IJB-C", dict(IJB_COUNTS["IJBC"]))  # the published numbers pass
    expected = IJB_COUNTS["IJBC"]
    assert expected["templates"] == expected["gallery_templates"] + expected["probe_templates"]
    assert expected["pairs"] == expected["genuine"] + expected["impostor"]
    with pytest.raises(ValueError, match="unknown IJB subset"):
        check_ijb_counts("IJBA", {})


def test_end_to_end_from_meta_files(tmp_path):
    meta_dir, data = write_meta(tmp_path)
    meta = load_ijb_meta(meta_dir)
    result = ijb_verification(
        data["feats"], meta.template_ids, meta.media_ids, meta.pair_t1, meta.pair_t2, meta.pair_labels,
        flipped=data["flipped"], faceness=meta.faceness, fars=(0.01, 0.1), dtype=np.float64, progress=False,
    )  # fmt: skip
    expected, _ = _reference_tar(
        data["feats"], data["flipped"], meta.template_ids, meta.media_ids, meta.faceness,
        POOLING_PRESETS["insightface"], meta.pair_t1, meta.pair_t2, meta.pair_labels, (0.01, 0.1),
    )  # fmt: skip
    assert result.tar_at_far == pytest.approx(expected, abs=1e-12)
