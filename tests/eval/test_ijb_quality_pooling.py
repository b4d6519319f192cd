"""IJB quality-weighted template pooling: min-max weights, the ``cr_fiqa_qs`` preset against CR-FIQA's
``eval_ijbc_qs.py`` written out in float64 (tests/_helpers/ijb_quality.py), and quality weighting with any preset."""

import numpy as np
import pytest

from _helpers.ijb_quality import eval_ijbc_qs_reference, ijb_quality_set
from qualiface.eval.ijb import (
    POOLING_PRESETS,
    TemplatePooling,
    ijb_verification,
    pool_templates,
    quality_weights,
)

FARS = (1e-3, 1e-2, 0.05, 0.1, 0.3)


def test_minmax_weights_follow_the_formula():
    q = np.random.default_rng(0).normal(0.5, 1.0, size=50)  # negative scores included
    w = quality_weights(q)
    expected = [(x - min(q.tolist())) / (max(q.tolist()) - min(q.tolist())) for x in q.tolist()]
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)
    assert (w.min(), w.max()) == (0.0, 1.0)
    np.testing.assert_array_equal(quality_weights(np.abs(q), "raw"), np.abs(q))


def test_weight_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"all 3 values equal 0\.5; min-max weights are undefined"):
        quality_weights(np.full(3, 0.5))
    with pytest.raises(ValueError, match=r"1 non-finite value.*image row 2"):
        quality_weights(np.array([0.1, 0.2, np.nan]))
    with pytest.raises(ValueError, match=r"1 negative or non-finite value.*image row 1"):
        quality_weights(np.array([0.1, -0.2, 0.3]), "raw")
    with pytest.raises(ValueError, match="quality_weights must be one of minmax, raw"):
        quality_weights(np.array([0.1, 0.2]), "rank")
    with pytest.raises(ValueError, match="quality_weights must be one of"):
        TemplatePooling(quality_weights="rank")  # type: ignore[arg-type]


def test_cr_fiqa_qs_preset_is_eval_ijbc_qs():
    preset = POOLING_PRESETS["cr_fiqa_qs"]
    assert (preset.flip_fusion, preset.normalize_images, preset.use_faceness) == ("sum_raw", False, False)
    assert (preset.normalize_media, preset.template_pool, preset.score) == (False, "sum", "cosine")
    assert (preset.quality_weights, preset.requires_quality) == ("minmax", True)


@pytest.mark.parametrize("seed", range(2))
def test_cr_fiqa_qs_templates_and_tar_match_the_reference(seed):
    d = ijb_quality_set(seed)
    ref_templates, ref_scores, ref_tar, ref_auc = eval_ijbc_qs_reference(
        d["feats"], d["flipped"], d["tids"], d["mids"], d["quality"], d["t1"], d["t2"], d["labels"], FARS
    )
    ours = pool_templates(
        d["feats"], d["tids"], d["mids"], flipped=d["flipped"], quality=d["quality"], pooling="cr_fiqa_qs",
        progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(ours.template_ids, sorted(ref_templates))
    expected = np.stack([ref_templates[t] for t in sorted(ref_templates)])
    np.testing.assert_allclose(ours.features, expected, rtol=0, atol=1e-12)
    assert ours.zero_templates.tolist() == [d["lonely"]]  # its only image has weight 0: kept as a zero row
    assert not ours.features[ours.index_of(np.array([d["lonely"]]))].any()
    result = ijb_verification(
        d["feats"], d["tids"], d["mids"], d["t1"], d["t2"], d["labels"], flipped=d["flipped"], quality=d["quality"],
        pooling="cr_fiqa_qs", fars=FARS, dtype=np.float64, progress=False,
    )  # fmt: skip
    assert result.tar_at_far == pytest.approx(ref_tar, abs=1e-12)
    assert result.auc == pytest.approx(ref_auc, abs=1e-12)
    assert result.to_dict()["pooling"]["quality_weights"] == "minmax"
    assert np.count_nonzero(ref_scores == 0) > 0  # the zero template scores 0, as sklearn's normalize leaves it


def test_quality_weighting_changes_the_results():
    """cr_fiqa_qs against the same pooling without weights (adaface: flip sum, raw norm, no faceness)."""
    d = ijb_quality_set(3)
    args = (d["feats"], d["tids"], d["mids"], d["t1"], d["t2"], d["labels"])
    kwargs = {"flipped": d["flipped"], "fars": FARS, "dtype": np.float64, "progress": False}
    weighted = ijb_verification(*args, quality=d["quality"], pooling="cr_fiqa_qs", **kwargs)
    plain = ijb_verification(*args, pooling="adaface", **kwargs)
    assert weighted.auc != pytest.approx(plain.auc, abs=1e-6)
    assert weighted.tar_at_far != plain.tar_at_far
    assert weighted.to_dict()["pooling"]["requires_quality"] is True


def test_quality_weights_with_any_preset_match_a_loop_reference():
    """insightface (faceness kept) with min-max quality weights: v = (f + f_flip) * faceness * w."""
    d = ijb_quality_set(4)
    faceness = np.random.default_rng(9).uniform(0.2, 1.0, size=len(d["tids"]))
    ours = pool_templates(
        d["feats"], d["tids"], d["mids"], flipped=d["flipped"], faceness=faceness, quality=d["quality"],
        progress=False,
    )  # fmt: skip
    q = d["quality"]
    w = (q - q.min()) / (q.max() - q.min())
    for row, t in enumerate(ours.template_ids.tolist()):
        media = []
        for m in sorted(set(d["mids"][d["tids"] == t].tolist())):
            idx = np.flatnonzero((d["tids"] == t) & (d["mids"] == m))
            v = (d["feats"][idx].astype(np.float64) + d["flipped"][idx]) * (faceness[idx] * w[idx])[:, None]
            media.append(v.mean(axis=0))
        template = np.sum(media, axis=0)
        norm = np.linalg.norm(template)
        np.testing.assert_allclose(ours.features[row], template / norm if norm else template, rtol=0, atol=1e-12)


def test_quality_presets_need_quality_and_raw_weights_keep_refusing_zero_templates():
    d = ijb_quality_set(5)
    with pytest.raises(ValueError, match="weights images by quality"):
        pool_templates(d["feats"], d["tids"], d["mids"], flipped=d["flipped"], pooling="cr_fiqa_qs")
    raw = TemplatePooling(use_faceness=False, quality_weights="raw")
    weights = np.where(d["tids"] == d["lonely"], 0.0, 1.0)
    with pytest.raises(ValueError, match=f"first: template {d['lonely']}"):
        pool_templates(d["feats"], d["tids"], d["mids"], flipped=d["flipped"], quality=weights, pooling=raw)
