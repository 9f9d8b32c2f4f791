"""Tests for ldsbench.evaluation.comparison: the two-way bootstrap, paired differences,
Holm's adjustment and the query-agnostic control."""

import numpy as np
import pytest

from ldsbench.evaluation.ceiling import retraining_ceiling, seed_agreement_per_query
from ldsbench.evaluation.comparison import (
    CEILING,
    Split,
    _ResampledRanks,
    holm_adjusted,
    interval,
    paired_differences,
    query_agnostic_predictions,
    two_way_bootstrap,
)
from ldsbench.evaluation.lds import bootstrap_mean_ci, group_predictions, spearman_from_ranks, spearman_per_query

ALL = {"all": Split()}


def _splits(test_queries, test_subsets=None):
    return {"all": Split(), "test": Split(test_queries, test_subsets)}


def test_resampled_ranks_equal_spearman_on_the_duplicated_rows():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 4, size=(15, 9)).astype(float)  # many ties
    truth = rng.normal(size=(15, 9))
    truth[:, 0] = 2.0  # constant column: NaN
    predictions[3, 1] = np.nan  # NaN column: NaN
    first, second = _ResampledRanks(predictions), _ResampledRanks(truth)
    for _ in range(20):
        rows = rng.integers(0, 15, size=15)
        counts = np.bincount(rows, minlength=15).astype(float)
        expected = spearman_per_query(predictions[rows], truth[rows])
        expected[1] = np.nan  # a NaN anywhere in the data leaves the query undefined in every draw
        got = spearman_from_ranks(first.centred(counts), second.centred(counts), counts)
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert np.isnan(got[0]) and np.isnan(got[1])


def test_point_estimates_are_the_plain_lds_and_ceiling():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(3, 12, 10)) + rng.normal(size=(1, 12, 10))
    predictions = {"a": rng.normal(size=(12, 10)), "b": truth.mean(axis=0) + rng.normal(size=(12, 10))}
    test_queries = np.array([False, True] * 5)
    test_subsets = np.arange(12) >= 5
    splits = _splits(test_queries, test_subsets)
    boot = two_way_bootstrap(predictions, truth, splits, 50, seed=0)
    for name, values in predictions.items():
        lds = spearman_per_query(values, truth.mean(axis=0))
        assert boot.point[name, "all"] == pytest.approx(np.nanmean(lds))
        on_test = spearman_per_query(values[test_subsets], truth.mean(axis=0)[test_subsets])
        assert boot.point[name, "test"] == pytest.approx(np.nanmean(on_test[test_queries]))
    assert boot.point[CEILING, "all"] == pytest.approx(retraining_ceiling(seed_agreement_per_query(truth), 3, 12))
    test_agreement = seed_agreement_per_query(truth[:, test_subsets])[test_queries]
    assert boot.point[CEILING, "test"] == pytest.approx(retraining_ceiling(test_agreement, 3, 7))
    assert boot.draws["a", "all"].shape == (50,)
    # Reproducible from its seed.
    again = two_way_bootstrap(predictions, truth, splits, 50, seed=0)
    np.testing.assert_array_equal(again.draws["b", "test"], boot.draws["b", "test"])


def test_a_split_resamples_only_its_own_subsets_and_queries():
    # A variant that predicts the truth on the test subsets and test queries
    # and is anti-correlated elsewhere: every draw of the test split must see
    # only test items, so its LDS is exactly 1 in every draw.
    rng = np.random.default_rng(6)
    truth = rng.normal(size=(2, 10, 8))
    test_queries, test_subsets = np.arange(8) >= 4, np.arange(10) >= 4
    prediction = -truth.mean(axis=0)
    prediction[np.ix_(test_subsets, test_queries)] *= -1.0
    prediction[~test_subsets] += 100.0 * np.arange(4)[:, None]  # out of order with the test subsets
    boot = two_way_bootstrap({"v": prediction}, truth, _splits(test_queries, test_subsets), 100, seed=0)
    finite = boot.draws["v", "test"][np.isfinite(boot.draws["v", "test"])]
    assert finite.size > 50 and np.allclose(finite, 1.0)
    assert boot.point["v", "all"] < 0.9


def test_splits_are_checked():
    truth, prediction = np.zeros((2, 4, 3)), {"a": np.zeros((4, 3))}
    with pytest.raises(ValueError, match="subsets mask must be \\[4\\]"):
        two_way_bootstrap(prediction, truth, {"test": Split(subsets=np.ones(5, dtype=bool))}, 10, 0)
    with pytest.raises(ValueError, match="holds no queries"):
        two_way_bootstrap(prediction, truth, {"test": Split(queries=np.zeros(3, dtype=bool))}, 10, 0)


def _shared_subset_effect(rng, n_subsets=16, n_queries=24):
    """Ground truth dominated by a subset effect every query shares, and a
    random method whose scores are one vector for every query: each query's
    LDS is then nearly the same draw, whose expectation is 0."""
    quality = rng.normal(size=(n_subsets, 1))
    truth = quality[None] + 0.3 * rng.normal(size=(2, n_subsets, n_queries))
    mask = rng.random((n_subsets, 40)) < 0.5
    scores = np.repeat(rng.normal(size=(1, 40)), n_queries, axis=0)
    return group_predictions(scores, mask), truth


def test_two_way_interval_covers_a_random_method_where_the_query_bootstrap_does_not():
    # Over many benchmarks of this kind the two-way interval must contain the
    # random method's true LDS (0) about 95% of the time; the query-only
    # interval treats the shared subsets as fixed and rarely does.
    rng = np.random.default_rng(2)
    covered_two_way = covered_queries_only = 0
    trials = 60
    for trial in range(trials):
        predictions, truth = _shared_subset_effect(rng)
        boot = two_way_bootstrap({"random": predictions}, truth, ALL, 200, seed=trial)
        low, high = boot.interval(("random", "all"), 0.95)
        covered_two_way += low <= 0 <= high
        queries_only = bootstrap_mean_ci(spearman_per_query(predictions, truth.mean(axis=0)), n_resamples=200, seed=trial)
        covered_queries_only += queries_only["ci_low"] <= 0 <= queries_only["ci_high"]
    assert covered_two_way / trials >= 0.85
    assert covered_queries_only / trials <= 0.5


def test_paired_difference_of_a_better_method_is_significant_and_of_a_copy_is_not():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(2, 30, 40)) + 2 * rng.normal(size=(1, 30, 40))
    good = truth.mean(axis=0) + 0.5 * rng.normal(size=(30, 40))
    weak = truth.mean(axis=0) + 3.0 * rng.normal(size=(30, 40))
    predictions = {"good": good, "copy": good * 2.0 + 1.0, "weak": weak}
    boot = two_way_bootstrap(predictions, truth, ALL, 300, seed=0)
    frame = paired_differences(boot, ["good", "copy", "weak"], "all", 0.95).set_index(["a", "b"])
    copy = frame.loc[("good", "copy")]
    assert copy["difference"] == pytest.approx(0.0, abs=1e-12) and not copy["significant"]
    better = frame.loc[("good", "weak")]
    assert better["difference"] > 0 and better["ci_low"] > 0 and better["significant"]
    assert better["p_holm"] >= better["p_value"]


def test_holm_adjustment_by_hand():
    # Sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> monotone 0.06.
    np.testing.assert_allclose(holm_adjusted(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjusted(np.array([0.5, 0.9])), [1.0, 1.0])


def test_query_agnostic_control_is_the_method_with_scores_averaged_over_the_other_queries():
    rng = np.random.default_rng(4)
    scores, mask = rng.normal(size=(5, 20)), rng.random((8, 20)) < 0.5
    control = query_agnostic_predictions(group_predictions(scores, mask))
    for q in range(5):
        averaged = np.delete(scores, q, axis=0).mean(axis=0, keepdims=True)
        np.testing.assert_allclose(control[:, q], group_predictions(averaged, mask)[:, 0])
    with pytest.raises(ValueError, match="Q >= 2"):
        query_agnostic_predictions(np.zeros((8, 1)))


def test_interval_ignores_nan_draws_and_checks_its_level():
    low, high = interval(np.array([np.nan, 0.0, 1.0, 2.0]), 0.5)
    assert low == pytest.approx(0.5) and high == pytest.approx(1.5)
    assert np.isnan(interval(np.array([np.nan]), 0.9)[0])
    with pytest.raises(ValueError, match="level"):
        interval(np.zeros(3), 1.0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected \\[M, Q\\]"):
        two_way_bootstrap({"a": np.zeros((3, 4))}, np.zeros((2, 3, 5)), ALL, 10, 0)


def test_one_variant_has_no_pairs():
    rng = np.random.default_rng(5)
    boot = two_way_bootstrap({"only": rng.normal(size=(6, 4))}, rng.normal(size=(2, 6, 4)), ALL, 20, seed=0)
    frame = paired_differences(boot, ["only"], "all", 0.95)
    assert frame.empty and {"difference", "p_holm", "significant"} <= set(frame.columns)


def test_cross_fitted_ceiling_and_followers():
    from ldsbench.evaluation.comparison import CROSS_FIT, Grid
    from ldsbench.evaluation.tuning import Folds

    rng = np.random.default_rng(8)
    truth = rng.normal(size=(3, 14, 9)) + rng.normal(size=(1, 14, 9))
    mean = truth.mean(axis=0)
    folds = Folds.of(9, 14, {"folds": 2, "seed": 2})
    # Value 1 is the truth itself, so every cell chooses it; the follower is
    # then read at value 1 too.
    predictions = np.stack([rng.normal(size=mean.shape), mean])
    follower = np.stack([mean, -mean])
    grid = Grid(np.array([1e-8, 1e-4]), predictions, followers={"control": follower}, untuned="default")
    boot = two_way_bootstrap({}, truth, {"all": Split()}, 30, seed=0, grids={"m": grid}, folds=folds)
    assert (boot.chosen["m"] == 1).all()
    assert boot.point["m", CROSS_FIT] == pytest.approx(1.0) and boot.point["control", CROSS_FIT] == pytest.approx(-1.0)
    # The untuned default under the same protocol: value 0 in every cell.
    alone = two_way_bootstrap({}, truth, {"all": Split()}, 30, seed=0, grids={"d": Grid(np.array([1e-8]), predictions[:1])}, folds=folds)
    assert boot.point["default", CROSS_FIT] == alone.point["d", CROSS_FIT]
    np.testing.assert_array_equal(boot.draws["default", CROSS_FIT], alone.draws["d", CROSS_FIT])
    ceilings = [retraining_ceiling(seed_agreement_per_query(truth[:, folds.subsets == b]), 3, int((folds.subsets == b).sum())) for b in range(2)]
    assert boot.point[CEILING, CROSS_FIT] == pytest.approx(np.mean(ceilings))
    with pytest.raises(ValueError, match="need the folds"):
        two_way_bootstrap({}, truth, {"all": Split()}, 10, 0, grids={"m": grid})


def test_pair_difference_reads_a_pair_either_way_round():
    from ldsbench.evaluation.comparison import pair_difference

    rng = np.random.default_rng(9)
    truth = rng.normal(size=(2, 12, 10))
    predictions = {"a": truth.mean(axis=0) + rng.normal(size=(12, 10)), "b": rng.normal(size=(12, 10))}
    boot = two_way_bootstrap(predictions, truth, ALL, 50, seed=0)
    pairs = paired_differences(boot, ["a", "b"], "all", 0.95).rename(columns={"a": "method_a", "b": "method_b"})
    forward, backward = pair_difference(pairs, "a", "b"), pair_difference(pairs, "b", "a")
    assert forward["difference"] == pytest.approx(boot.point["a", "all"] - boot.point["b", "all"]) == -backward["difference"]
    assert (forward["ci_low"], forward["ci_high"]) == pytest.approx((-backward["ci_high"], -backward["ci_low"]))
    assert forward["ci_low"] <= forward["ci_high"] and forward["p_holm"] == backward["p_holm"]
    with pytest.raises(KeyError, match="no paired difference of 'a' and 'c'"):
        pair_difference(pairs, "a", "c")
