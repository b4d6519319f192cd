"""Rank correlations (docs/protocols.md, 'Rank correlations') against loop-based float64 definitions of Spearman's
ρ (Pearson on average ranks) and Kendall's τ-b (concordant/discordant pairs with tie corrections)."""

import math

import numpy as np
import pytest

from qualiface.eval.correlation import mated_score_correlation, rank_correlation, rank_correlation_matrix


def average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def ref_spearman(x, y):
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def ref_kendall_b(x, y):
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx * dy > 0:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / math.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )


def test_rank_correlation_matches_definitions_with_ties():
    rng = np.random.default_rng(0)
    quality = np.round(rng.random(200), 1)  # many ties
    degradation = np.round(3 * (1 - quality) + rng.standard_normal(200), 1)
    result = rank_correlation(quality, degradation, x_name="quality", y_name="blur")
    assert result.n == 200
    assert result.x_name == "quality"
    assert result.y_name == "blur"
    assert result.spearman_rho == pytest.approx(ref_spearman(list(quality), list(degradation)), abs=1e-12)
    assert result.kendall_tau_b == pytest.approx(ref_kendall_b(list(quality), list(degradation)), abs=1e-12)
    assert result.spearman_rho < -0.5
    assert 0 <= result.spearman_pvalue < 1e-6
    assert result.to_dict()["kendall_tau_b"] == result.kendall_tau_b


def test_perfect_monotone_relation():
    x = np.arange(10.0)
    result = rank_correlation(x, np.exp(x))
    assert result.spearman_rho == pytest.approx(1.0)
    assert result.kendall_tau_b == pytest.approx(1.0)


def test_matrix_between_methods():
    rng = np.random.default_rng(1)
    a = rng.random(50)
    methods = {"a": a, "b": a + 0.1 * rng.random(50), "c": rng.random(50)}
    matrix = rank_correlation_matrix(methods)
    assert matrix.names == ["a", "b", "c"]
    assert matrix.n == 50
    np.testing.assert_allclose(np.diag(matrix.spearman_rho), 1.0)
    np.testing.assert_allclose(matrix.spearman_rho, matrix.spearman_rho.T)
    assert matrix.spearman_rho[0, 2] == pytest.approx(ref_spearman(list(a), list(methods["c"])), abs=1e-12)
    assert matrix.kendall_tau_b[0, 1] == pytest.approx(ref_kendall_b(list(a), list(methods["b"])), abs=1e-12)
    assert [(r["x_name"], r["y_name"]) for r in matrix.rows()] == [("a", "b"), ("a", "c"), ("b", "c")]


def test_mated_score_correlation_uses_mated_pairs_only():
    rng = np.random.default_rng(2)
    labels = np.arange(90) % 3 == 0
    quality = rng.random(90)
    scores = np.where(labels, quality + 0.1 * rng.random(90), rng.random(90))
    result = mated_score_correlation(scores, labels.astype(int), quality)
    assert result.n == 30
    assert result.spearman_rho == pytest.approx(ref_spearman(list(quality[labels]), list(scores[labels])), abs=1e-12)
    with pytest.raises(ValueError, match=r"labels: must be 0"):
        mated_score_correlation(scores, np.full(90, 2), quality)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"quality: all 4 values are equal"):
        rank_correlation(np.ones(4), np.arange(4.0), x_name="quality")
    with pytest.raises(ValueError, match=r"y: 1 non-finite value.*index 2"):
        rank_correlation(np.arange(4.0), np.array([1.0, 2.0, np.nan, 3.0]))
    with pytest.raises(ValueError, match=r"x has 4 values but y has 3"):
        rank_correlation(np.arange(4.0), np.arange(3.0))
    with pytest.raises(ValueError, match=r"at least 3 values"):
        rank_correlation(np.arange(2.0), np.arange(2.0))
    with pytest.raises(ValueError, match=r"at least two score vectors"):
        rank_correlation_matrix({"a": np.arange(4.0)})
