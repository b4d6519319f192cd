"""1:N identification (TinyFace protocol) against a loop transcription of the reference ``DIR_FAR``."""

import numpy as np
import pytest

from qualiface.eval.identification import (
    DISTRACTOR_LABEL,
    TINYFACE_COUNTS,
    TinyFaceLists,
    check_tinyface_counts,
    identification,
    tinyface_identification,
    tinyface_label,
    tinyface_lists,
)


def dir_far_reference(score_mat, label_mat, ranks, fars):
    """tinyface_helper.py DIR_FAR + find_thresholds_by_FAR, row by row in float64."""
    match = label_mat.any(axis=1)
    score_m, label_m, score_nm = score_mat[match], label_mat[match], score_mat[~match]
    closed = len(fars) == 1 and fars[0] >= 1.0
    if closed:
        thresholds = [score_mat.min() - 1e-10]
    else:
        neg = np.sort(score_nm.max(axis=1))[::-1]
        thresholds = []
        for far in fars:
            n_fa = int(np.round(len(neg) * far))
            thresholds.append(neg[0] + 1e-5 if n_fa == 0 else neg[n_fa - 1])
    dirs = np.zeros((len(thresholds), len(ranks)))
    for i, th in enumerate(thresholds):
        for j, rank in enumerate(ranks):
            hits = 0
            for row in range(score_m.shape[0]):
                order = np.argsort(score_m[row])[::-1]
                retrieved = label_m[row, order[:rank]].any()
                if closed:
                    hits += retrieved
                else:
                    gt = score_m[row][label_m[row]]
                    assert gt.size == 1
                    hits += retrieved and gt[0] >= th
            dirs[i, j] = hits / score_m.shape[0]
    return dirs, thresholds


def make_data(seed, n_ids=15, per_id=(1, 3), n_distractors=40, n_probe=50, unmated=0, dim=10):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids + unmated, dim))
    g_labels = np.concatenate([[i] * rng.integers(per_id[0], per_id[1] + 1) for i in range(n_ids)])
    gallery = centers[g_labels] + 0.9 * rng.normal(size=(len(g_labels), dim))
    gallery = np.vstack([gallery, rng.normal(size=(n_distractors, dim))])
    g_labels = np.r_[g_labels, np.full(n_distractors, DISTRACTOR_LABEL)]
    p_labels = rng.integers(0, n_ids + unmated, n_probe)
    probe = centers[p_labels] + 0.9 * rng.normal(size=(n_probe, dim))
    return probe, p_labels, gallery, g_labels


@pytest.mark.parametrize("seed", range(3))
def test_closed_set_rank_k_matches_dir_far_loops(seed):
    probe, p_labels, gallery, g_labels = make_data(seed, per_id=(1, 4), unmated=3)
    result = identification(probe, p_labels, gallery, g_labels, ranks=(1, 5, 20), normalize=False, block=7)
    score = probe @ gallery.T
    ref, _ = dir_far_reference(score, p_labels[:, None] == g_labels[None, :], [1, 5, 20], [1.0])
    assert [result.rank[k] for k in (1, 5, 20)] == pytest.approx(ref[0].tolist(), abs=1e-15)
    assert result.n_mated == int(np.isin(p_labels, g_labels).sum())
    assert result.n_distractors == 40
    assert np.all(np.diff(result.cmc) >= 0)
    assert len(result.cmc) == 20


@pytest.mark.parametrize("seed", range(3))
def test_open_set_dir_at_fpir_matches_dir_far_loops(seed):
    probe, p_labels, gallery, g_labels = make_data(seed, per_id=(1, 1), unmated=10, n_probe=120)
    fpirs = [0.0, 0.01, 0.1, 0.3, 0.5]
    result = identification(probe, p_labels, gallery, g_labels, ranks=(1, 5), fpirs=fpirs, normalize=False)
    score = probe @ gallery.T
    ref, thresholds = dir_far_reference(score, p_labels[:, None] == g_labels[None, :], [1, 5], fpirs)
    nonmated_max = score[~np.isin(p_labels, g_labels)].max(axis=1)
    for i, fpir in enumerate(fpirs):
        assert [result.dir_at_fpir[fpir][k] for k in (1, 5)] == pytest.approx(ref[i].tolist(), abs=1e-15)
        assert result.thresholds[fpir] == pytest.approx(thresholds[i], abs=1e-14)
        assert result.fpir_actual[fpir] == pytest.approx(np.mean(nonmated_max >= thresholds[i]), abs=1e-15)
    assert result.dir_at_fpir[0.0][1] <= result.dir_at_fpir[0.5][1] <= result.rank[1]


def test_normalize_makes_scores_scale_invariant():
    probe, p_labels, gallery, g_labels = make_data(4)
    scales = np.random.default_rng(0).uniform(0.1, 10, size=(len(probe), 1))
    a = identification(probe * scales, p_labels, gallery, g_labels, normalize=True)
    b = identification(
        probe / np.linalg.norm(probe, axis=1, keepdims=True),
        p_labels,
        gallery / np.linalg.norm(gallery, axis=1, keepdims=True),
        g_labels,
    )
    np.testing.assert_array_equal(a.cmc, b.cmc)


def test_ties_count_against_the_probe():
    gallery = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    g_labels = np.array([5, 6, 7])
    probe = np.array([[1.0, 0.0]])
    result = identification(probe, np.array([5]), gallery, g_labels, ranks=(1, 2))
    assert result.rank == {1: 0.0, 2: 1.0}


def test_result_exports_cmc_rows():
    probe, p_labels, gallery, g_labels = make_data(5)
    result = identification(probe, p_labels, gallery, g_labels, ranks=(1, 3), max_rank=10)
    rows = result.rows()
    assert [row["rank"] for row in rows] == list(range(1, 11))
    assert rows[0]["identification_rate"] == result.rank[1]
    assert result.to_dict()["rank"] == {"1": result.rank[1], "3": result.rank[3]}


def test_bad_inputs_raise_clear_errors():
    probe, p_labels, gallery, g_labels = make_data(6, unmated=2)
    with pytest.raises(ValueError, match="distractor label -100"):
        identification(probe, np.r_[p_labels[:-1], -100], gallery, g_labels)
    bad = probe.copy()
    bad[[3, 9], 1] = np.nan
    with pytest.raises(ValueError, match=r"probe features: 2 row\(s\) with NaN or inf, first row 3"):
        identification(bad, p_labels, gallery, g_labels)
    with pytest.raises(ValueError, match=r"gallery: .* feature rows but labels"):
        identification(probe, p_labels, gallery, g_labels[:-1])
    with pytest.raises(ValueError, match="no probe has a mate"):
        identification(probe, p_labels + 1000, gallery, g_labels)
    mated = np.isin(p_labels, g_labels)
    with pytest.raises(ValueError, match="needs non-mated probes"):
        identification(probe[mated], p_labels[mated], gallery, g_labels, fpirs=(0.1,))
    with pytest.raises(ValueError, match="ranks must be positive"):
        identification(probe, p_labels, gallery, g_labels, ranks=(0,))
    with pytest.raises(ValueError, match="dims differ"):
        identification(probe[:, :5], p_labels, gallery, g_labels)
    with pytest.raises(ValueError, match="labels must be integers"):
        identification(probe, p_labels.astype(float), gallery, g_labels)


# ------------------------------------------------------------------------------------------------- TinyFace


def test_tinyface_label_and_lists():
    image_paths = [
        "aligned/Probe/12_3.jpg",
        "aligned/Gallery_Match/12_1.png",
        "aligned/Gallery_Distractor/7_900.jpg",
        "aligned/Gallery_Match/4_2.jpg",
        "aligned/Probe/4_5.jpg",
    ]
    lists = tinyface_lists(
        image_paths,
        probe_paths=["Testing_Set/Probe/4_5.jpg", "Testing_Set/Probe/12_3.jpg"],
        match_paths=["Testing_Set/Gallery_Match/12_1.jpg", "Testing_Set/Gallery_Match/4_2.jpg"],
        distractor_paths=["Testing_Set/Gallery_Distractor/7_900.jpg"],
    )
    assert lists.probe_index.tolist() == [4, 0]
    assert lists.probe_labels.tolist() == [4, 12]
    assert lists.gallery_index.tolist() == [1, 3, 2]  # matches first, then distractors
    assert lists.gallery_labels.tolist() == [12, 4, DISTRACTOR_LABEL]
    assert tinyface_label("/x/y/1043_17.jpg") == 1043
    with pytest.raises(ValueError, match="starts with '<identity>_'"):
        tinyface_label("/x/face_3.jpg")
    with pytest.raises(ValueError, match="probe list: 1 image"):
        tinyface_lists(image_paths, ["P/99_1.jpg"], [], [])
    with pytest.raises(ValueError, match="occurs twice"):
        tinyface_lists([*image_paths, "other/12_3.png"], [], [], [])


def unit_rows(x):
    """Rows divided by their Euclidean norm, float64 (the reference's ``l2_norm``)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


def scaled_data(seed):
    """make_data with per-row norms spread over two decades, so raw and unit scores rank differently."""
    probe, p_labels, gallery, g_labels = make_data(seed, per_id=(1, 1), unmated=6, n_probe=80)
    rng = np.random.default_rng(100 + seed)
    gallery = gallery * rng.uniform(0.1, 10.0, size=(len(gallery), 1))
    probe = probe * rng.uniform(0.1, 10.0, size=(len(probe), 1))
    return probe, p_labels, gallery, g_labels


@pytest.mark.parametrize("seed", range(2))
def test_default_scores_unit_features_as_the_tinyface_protocol(seed):
    """Default = AdaFace validate_tinyface.py: unit (fused) features, inner product; raw only on request."""
    probe, p_labels, gallery, g_labels = scaled_data(seed)
    label_mat = p_labels[:, None] == g_labels[None, :]
    fpirs = [0.1, 0.3]
    unit_ref, unit_thr = dir_far_reference(unit_rows(probe) @ unit_rows(gallery).T, label_mat, [1, 5], fpirs)
    closed_ref = dir_far_reference(unit_rows(probe) @ unit_rows(gallery).T, label_mat, [1, 5], [1.0])[0]
    raw_ref = dir_far_reference(probe @ gallery.T, label_mat, [1, 5], [1.0])[0]
    assert closed_ref[0, 0] != raw_ref[0, 0]  # the data separate the two: the old raw default fails below
    result = identification(probe, p_labels, gallery, g_labels, ranks=(1, 5), fpirs=fpirs)
    assert result.normalized is True
    assert [result.rank[k] for k in (1, 5)] == pytest.approx(closed_ref[0].tolist(), abs=1e-15)
    for i, fpir in enumerate(fpirs):
        assert [result.dir_at_fpir[fpir][k] for k in (1, 5)] == pytest.approx(unit_ref[i].tolist(), abs=1e-15)
        assert result.thresholds[fpir] == pytest.approx(unit_thr[i], abs=1e-12)
    raw = identification(probe, p_labels, gallery, g_labels, ranks=(1, 5), normalize=False)
    assert raw.normalized is False
    assert [raw.rank[k] for k in (1, 5)] == pytest.approx(raw_ref[0].tolist(), abs=1e-15)
    assert result.to_dict()["normalized"] is True
    assert raw.to_dict()["normalized"] is False


def test_tinyface_identification_uses_the_listed_rows():
    probe, p_labels, gallery, g_labels = make_data(7)
    features = np.vstack([gallery, probe])
    n_match = int((g_labels != DISTRACTOR_LABEL).sum())
    lists = TinyFaceLists(
        probe_index=np.arange(len(gallery), len(features)),
        probe_labels=p_labels,
        gallery_index=np.arange(len(gallery)),
        gallery_labels=g_labels,
        n_matches=n_match,
        n_distractors=len(g_labels) - n_match,
    )
    a = tinyface_identification(features, lists)
    b = identification(probe, p_labels, gallery, g_labels, ranks=(1, 5, 20))
    assert a.rank == b.rank


def test_tinyface_count_check():
    lists = TinyFaceLists(np.zeros(3, int), np.zeros(3, int), np.zeros(4, int), np.zeros(4, int), 2, 2)
    with pytest.raises(ValueError, match="probes: found 3, expected 3,728"):
        check_tinyface_counts(lists)
    ok = TinyFaceLists(
        np.zeros(TINYFACE_COUNTS["probes"], int),
        np.zeros(1, int),
        np.zeros(1, int),
        np.zeros(1, int),
        TINYFACE_COUNTS["gallery_matches"],
        TINYFACE_COUNTS["distractors"],
    )
    check_tinyface_counts(ok)
