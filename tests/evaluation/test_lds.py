"""Tests for ldsbench.evaluation.lds: group predictions, Spearman LDS, bootstrap, ceiling."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata, spearmanr

from ldsbench.evaluation.ceiling import expected_spearman, retraining_ceiling, seed_agreement_per_query
from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.lds import average_ranks, bootstrap_mean_ci, group_predictions, lds_per_query, spearman_per_query

# Hand-computed example: Q = 3 queries, N = 4 training examples, M = 4 subsets.
SCORES = np.array(
    [
        [1.0, 2.0, 3.0, 4.0],  # query 0
        [4.0, 0.0, 0.0, 1.0],  # query 1
        [0.0, 1.0, 0.0, -1.0],  # query 2
    ]
)
MASK = np.array(
    [
        [1, 1, 0, 0],  # S0 = {0, 1}
        [0, 1, 1, 0],  # S1 = {1, 2}
        [0, 0, 1, 1],  # S2 = {2, 3}
        [1, 0, 0, 1],  # S3 = {0, 3}
    ],
    dtype=bool,
)
TRUTH = np.array(  # [M, Q]
    [
        [10.0, 2.0, 1.0],
        [20.0, 2.0, 2.0],
        [40.0, 2.0, 3.0],
        [30.0, 2.0, 4.0],
    ]
)
# Query 0: g = [3, 5, 7, 5] -> ranks [1, 2.5, 4, 2.5] (tie averaged);
#          y = [10, 20, 40, 30] -> ranks [1, 2, 4, 3]. Centred: [-1.5, 0, 1.5, 0]
#          and [-1.5, -0.5, 1.5, 0.5]; rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
# Query 1: y constant over subsets -> NaN.
# Query 2: g = [1, 1, -1, -1] -> ranks [3.5, 3.5, 1.5, 1.5];
#          y = [1, 2, 3, 4] -> ranks [1, 2, 3, 4]. Centred: [1, 1, -1, -1] and
#          [-1.5, -0.5, 0.5, 1.5]; rho = -4 / sqrt(4 * 5) = -2 / sqrt(5).
EXPECTED = np.array([math.sqrt(0.9), np.nan, -2.0 / math.sqrt(5.0)])


def test_group_predictions_by_hand():
    g = group_predictions(SCORES, MASK)
    assert g.shape == (4, 3) and g.dtype == np.float64
    np.testing.assert_array_equal(g, [[3.0, 4.0, 1.0], [5.0, 0.0, 1.0], [7.0, 1.0, -1.0], [5.0, 5.0, -1.0]])


def test_lds_hand_computed_with_ties_and_nan():
    lds = lds_per_query(SCORES, MASK, TRUTH)
    np.testing.assert_allclose(lds, EXPECTED, rtol=0, atol=1e-12)
    assert np.isnan(lds[1])


def test_lds_averages_seed_axis():
    # [K, M, Q] truth is averaged over seeds before ranking.
    per_seed = np.stack([TRUTH - 1.0, TRUTH + 1.0])
    np.testing.assert_allclose(lds_per_query(SCORES, MASK, per_seed), EXPECTED, atol=1e-12)


def test_nan_query_is_excluded_and_counted():
    summary = bootstrap_mean_ci(EXPECTED, n_resamples=200, seed=0)
    assert summary["n"] == 2 and summary["n_excluded"] == 1
    assert summary["mean"] == pytest.approx((math.sqrt(0.9) - 2.0 / math.sqrt(5.0)) / 2)


def test_matches_scipy_with_many_ties():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 4, size=(30, 5)).astype(float)
    truth = rng.integers(0, 3, size=(30, 5)).astype(float)
    expected = [spearmanr(predictions[:, q], truth[:, q]).statistic for q in range(5)]
    np.testing.assert_allclose(spearman_per_query(predictions, truth), expected, atol=1e-12)


def test_average_ranks_are_scipys_bit_for_bit():
    rng = np.random.default_rng(0)
    # Few distinct values: many ties, whole tied columns; NaN in some columns.
    values = rng.integers(0, 4, size=(40, 30)).astype(np.float64)
    values[:, 0] = 1.0
    values[rng.integers(0, 40, size=5), rng.integers(1, 30, size=5)] = np.nan
    values = np.concatenate([values, rng.normal(size=(40, 5))], axis=1)
    expected = rankdata(values, method="average", axis=0)
    assert np.isnan(expected).any(axis=0).sum() >= 3
    assert average_ranks(values).tobytes() == expected.tobytes()


def test_constant_prediction_is_nan():
    predictions = np.ones((5, 2))
    predictions[:, 1] = np.arange(5)
    rho = spearman_per_query(predictions, np.arange(10.0).reshape(5, 2))
    assert np.isnan(rho[0]) and rho[1] == pytest.approx(1.0)


def _linear_problem(seed=0, n_queries=6, n_train=40, n_subsets=50):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_queries, n_train))
    mask = rng.random((n_subsets, n_train)) < 0.5
    return scores, mask, mask.astype(float) @ scores.T


def test_perfect_and_reversed_predictors():
    scores, mask, truth = _linear_problem()
    np.testing.assert_allclose(lds_per_query(scores, mask, truth), 1.0)
    np.testing.assert_allclose(lds_per_query(-scores, mask, truth), -1.0)
    # A monotone transform of the truth leaves ranks, hence LDS, unchanged.
    np.testing.assert_allclose(lds_per_query(scores, mask, np.exp(truth)), 1.0)


def test_invariant_to_positive_scaling():
    scores, mask, truth = _linear_problem(seed=1)
    noisy = truth + np.random.default_rng(2).normal(scale=2.0, size=truth.shape)
    base = lds_per_query(scores, mask, noisy)
    assert 0.0 < base.mean() < 1.0  # a non-trivial value
    np.testing.assert_allclose(lds_per_query(37.5 * scores, mask, noisy), base, atol=1e-12)
    np.testing.assert_allclose(lds_per_query(1e-6 * scores, mask, noisy), base, atol=1e-12)


def test_bootstrap_deterministic_for_seed():
    values = np.random.default_rng(0).normal(0.3, 0.2, size=50)
    a = bootstrap_mean_ci(values, seed=5)
    b = bootstrap_mean_ci(values, seed=5)
    c = bootstrap_mean_ci(values, seed=6)
    assert a == b
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])
    assert set(a) == {"mean", "ci_low", "ci_high", "n", "n_excluded"}


def test_bootstrap_interval_contains_mean_and_shrinks():
    rng = np.random.default_rng(1)
    small = bootstrap_mean_ci(rng.normal(0.3, 0.2, size=20))
    large = bootstrap_mean_ci(rng.normal(0.3, 0.2, size=2000))
    for s in (small, large):
        assert s["ci_low"] < s["mean"] < s["ci_high"]
    assert small["n"] == 20 and small["n_excluded"] == 0
    # Width scales like 1/sqrt(n): 10x narrower for 100x more queries.
    small_width = small["ci_high"] - small["ci_low"]
    large_width = large["ci_high"] - large["ci_low"]
    assert large_width < small_width / 5
    # About 2 * 1.96 * 0.2 / sqrt(2000) = 0.0175.
    assert large_width == pytest.approx(0.0175, rel=0.15)


def test_bootstrap_all_nan():
    s = bootstrap_mean_ci(np.array([np.nan, np.nan]))
    assert s["n"] == 0 and s["n_excluded"] == 2 and math.isnan(s["mean"])


def test_seed_agreement_identical_seeds_is_one():
    truth = np.random.default_rng(0).normal(size=(8, 3))
    np.testing.assert_allclose(seed_agreement_per_query(np.stack([truth, truth])), 1.0)


def test_seed_agreement_two_seeds_is_their_spearman():
    rng = np.random.default_rng(3)
    per_seed = rng.normal(size=(2, 20, 4))
    expected = [spearmanr(per_seed[0, :, q], per_seed[1, :, q]).statistic for q in range(4)]
    np.testing.assert_allclose(seed_agreement_per_query(per_seed), expected, atol=1e-12)


def test_seed_agreement_three_seeds_is_the_mean_over_pairs():
    # y_0 = [1, 2, 3], y_1 = [1, 2, 3], y_2 = [1, 3, 2]: pairs 1, 0.5, 0.5.
    per_seed = np.array([[1, 2, 3], [1, 2, 3], [1, 3, 2]], dtype=float)[:, :, None]
    assert seed_agreement_per_query(per_seed)[0] == pytest.approx(2.0 / 3.0)
    per_seed[2, :, 0] = 5.0  # a constant seed: the query is undefined
    assert np.isnan(seed_agreement_per_query(per_seed)[0])


@pytest.mark.parametrize(("n_seeds", "n_subsets", "noise"), [(2, 16, 1.0), (2, 16, 0.5), (3, 40, 2.0), (5, 100, 1.5)])
def test_ceiling_is_the_lds_of_a_perfect_predictor_against_the_seed_mean(n_seeds, n_subsets, noise):
    # Synthetic ground truth whose answer is known: y = mu + noise per seed;
    # the best predictor is mu itself, scored against the seed mean like a method.
    rng = np.random.default_rng(n_seeds * 100 + n_subsets)
    mu = rng.normal(size=(n_subsets, 3000))
    per_seed = mu[None] + noise * rng.normal(size=(n_seeds, n_subsets, 3000))
    best = np.nanmean(spearman_per_query(mu, per_seed.mean(axis=0)))
    agreement = seed_agreement_per_query(per_seed)
    ceiling = retraining_ceiling(agreement, n_seeds, n_subsets)
    assert ceiling == pytest.approx(best, abs=0.01)
    # One seed against another (the single-seed agreement) is far below what
    # a method can reach against the seed mean.
    assert ceiling > np.nanmean(agreement) + 0.05


def test_ceiling_edges():
    assert retraining_ceiling(np.array([-0.1, 0.05]), 2, 16) == 0.0
    assert retraining_ceiling(np.array([1.0, 1.0]), 3, 16) == 1.0
    assert np.isnan(retraining_ceiling(np.array([np.nan]), 2, 16))
    # More seeds, a higher ceiling; query weights pool like repeated queries.
    assert retraining_ceiling(np.array([0.3]), 5, 16) > retraining_ceiling(np.array([0.3]), 2, 16)
    assert retraining_ceiling(np.array([0.2, 0.6]), 2, 16, weights=np.array([1.0, 3.0])) == pytest.approx(
        retraining_ceiling(np.array([0.2, 0.6, 0.6, 0.6]), 2, 16)
    )
    with pytest.raises(ValueError, match="K >= 2"):
        retraining_ceiling(np.array([0.3]), 1, 16)
    with pytest.raises(ValueError, match="K >= 2"):
        seed_agreement_per_query(np.zeros((1, 5, 2)))


def test_expected_spearman():
    assert expected_spearman(1.0, 16) == pytest.approx(1.0)
    assert expected_spearman(0.0, 16) == 0.0
    # Large M: Pearson-to-Spearman of the bivariate normal, (6 / pi) arcsin(rho / 2).
    assert expected_spearman(0.5, 10**6) == pytest.approx(6 / math.pi * math.asin(0.25), abs=1e-5)


def _truth_frame(n_subsets=3, n_seeds=2, n_queries=4):
    idx = pd.MultiIndex.from_product([range(n_subsets), range(n_seeds), range(n_queries)], names=["subset", "seed", "query"])
    frame = idx.to_frame(index=False)
    frame["value"] = 100 * frame["seed"] + 10 * frame["subset"] + frame["query"]
    return frame


def test_ground_truth_array_layout():
    frame = _truth_frame().sample(frac=1.0, random_state=0)  # row order must not matter
    out = ground_truth_array(frame, n_subsets=3, n_seeds=2, n_queries=4)
    assert out.shape == (2, 3, 4)
    assert out[1, 2, 3] == 123.0 and out[0, 1, 0] == 10.0


def test_ground_truth_array_rejects_incomplete_frames():
    frame = _truth_frame()
    with pytest.raises(ValueError, match=r"missing.*subsets \[2\].*seeds \[1\].*queries \[3\]"):
        ground_truth_array(frame.iloc[:-1], 3, 2, 4)
    with pytest.raises(ValueError, match="duplicated"):
        ground_truth_array(pd.concat([frame, frame.iloc[[5]]]), 3, 2, 4)
    with pytest.raises(ValueError, match="value"):
        ground_truth_array(frame.drop(columns="value"), 3, 2, 4)
    with pytest.raises(ValueError, match="seed"):
        ground_truth_array(frame, 3, 1, 4)  # seed id 1 is out of range
    bad = frame.copy()
    bad.loc[0, "value"] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ground_truth_array(bad, 3, 2, 4)
