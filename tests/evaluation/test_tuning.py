"""Damping chosen by cross-fitting: folds of queries and subsets, each cell
read at the value chosen on the other folds."""

import numpy as np
import pytest

from ldsbench.evaluation.comparison import Grid, Split, two_way_bootstrap
from ldsbench.evaluation.lds import spearman_per_query
from ldsbench.evaluation.tuning import Folds, choose_tuned_value, consensus_value, fold_labels


def test_folds_are_reproducible_balanced_and_checked():
    labels = fold_labels(10, 3, seed=3)
    assert sorted(np.bincount(labels).tolist()) == [3, 3, 4] and labels.tolist() == fold_labels(10, 3, seed=3).tolist()
    assert labels.tolist() != fold_labels(10, 3, seed=4).tolist()
    with pytest.raises(ValueError, match="leave 1 in the smallest fold; each needs at least 2"):
        fold_labels(5, 3, seed=0, items="subsets", minimum=2)
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_labels(5, 1, seed=0)
    folds = Folds.of(10, 16, {"folds": 2, "seed": 3})
    assert folds.n_folds == 2 and np.bincount(folds.subsets).tolist() == [8, 8] and np.bincount(folds.queries).tolist() == [5, 5]
    # The query folds do not depend on M.
    assert folds.queries.tolist() == Folds.of(10, 30, {"folds": 2, "seed": 3}).queries.tolist()
    assert folds.cells() == [(0, 0), (0, 1), (1, 0), (1, 1)]


def _choose(table, tuning, weights=None):
    """table: {value: [lds of query 0..Q-1]}, the default first."""
    values = np.array(list(table), dtype=float)
    return choose_tuned_value(values, np.array(list(table.values()), dtype=float), np.asarray(tuning), weights)


def test_tuned_value_is_chosen_on_tuning_queries_only():
    tuning = np.array([True, True, False, False])
    # 1e-4 is best on the tuning queries, 1e-2 would be best on the test ones:
    # the test split must not leak into the choice.
    index, score = _choose({1e-8: [0.1, 0.1, 0.2, 0.2], 1e-4: [0.5, 0.5, 0.3, 0.3], 1e-2: [0.0, 0.0, 0.9, 0.9]}, tuning)
    assert index == 1 and score == pytest.approx(0.5)
    # Query weights (a bootstrap's multiplicities) weigh the means.
    index, score = _choose({1e-8: [0.9, 0.0, 0.0, 0.0], 1e-4: [0.0, 0.5, 0.0, 0.0]}, tuning, weights=np.array([1.0, 3.0, 1.0, 1.0]))
    assert index == 1 and score == pytest.approx(0.375)


def test_ties_go_to_more_damping_and_methods_without_a_grid_keep_their_default():
    tuning = np.array([True, False, False])
    assert _choose({1e-6: [0.4, 0.1, 0.1], 1e-2: [0.4, 0.2, 0.2]}, tuning)[0] == 1
    # The default repeated in the grid: the default's index wins the tie.
    repeated = choose_tuned_value(np.array([1e-2, 1e-6, 1e-2]), np.array([[0.4, 0.1, 0.1], [0.1, 0.1, 0.1], [0.4, 0.1, 0.1]]), tuning)
    assert repeated[0] == 0
    index, score = choose_tuned_value(np.array([np.nan]), np.array([[0.3, 0.1, 0.5]]), tuning)
    assert index == 0 and score == pytest.approx(0.3)


def test_nan_queries_are_left_out_and_shapes_checked():
    tuning = np.array([True, True, False, False])
    assert _choose({1e-8: [np.nan, 0.2, 0.4, np.nan]}, tuning)[1] == pytest.approx(0.2)
    index, score = _choose({1e-8: [np.nan, np.nan, 0.4, 0.1], 1e-4: [np.nan, np.nan, 0.5, 0.5]}, tuning)
    assert index == 0 and np.isnan(score)
    with pytest.raises(ValueError, match="per_query must be"):
        choose_tuned_value(np.array([1e-8]), np.zeros((2, 4)), tuning)


def test_consensus_value_is_the_most_chosen_ties_to_the_larger():
    assert consensus_value(np.array([[1.0, 10.0], [10.0, 1.0]])) == 10.0
    assert consensus_value(np.array([[1.0, 1.0], [10.0, 1.0]])) == 1.0
    assert np.isnan(consensus_value(np.full((2, 2), np.nan)))


def _cross_fit_by_hand(values, predictions, truth, folds):
    """The protocol written out cell by cell with plain Spearman correlations."""
    n_folds = folds.n_folds
    per_fold = np.full((n_folds, truth.shape[1]), np.nan)
    chosen = np.zeros((n_folds, n_folds), dtype=int)
    for a, b in folds.cells():
        rest, fold = folds.subsets != b, folds.subsets == b
        tuning = np.stack([spearman_per_query(p[rest], truth[rest]) for p in predictions])
        chosen[a, b] = choose_tuned_value(values, tuning, folds.queries != a)[0]
        rows = folds.queries == a
        per_fold[b, rows] = spearman_per_query(predictions[chosen[a, b]][fold], truth[fold])[rows]
    return np.nanmean(per_fold, axis=0), chosen


def test_cross_fitted_point_estimate_is_the_protocol_cell_by_cell():
    rng = np.random.default_rng(4)
    n_subsets, n_queries = 18, 10
    truth = rng.normal(size=(2, n_subsets, n_queries))
    mean = truth.mean(axis=0)
    values = np.array([1e-8, 1e-4, 1e-2])
    predictions = np.stack([mean + s * rng.normal(size=mean.shape) for s in (3.0, 1.0, 2.0)])
    folds = Folds.of(n_queries, n_subsets, {"folds": 3, "seed": 1})
    boot = two_way_bootstrap({}, truth, {"all": Split()}, 20, seed=0, grids={"m": Grid(values, predictions)}, folds=folds)
    per_query, chosen = _cross_fit_by_hand(values, predictions, mean, folds)
    np.testing.assert_array_equal(boot.chosen["m"], chosen)
    np.testing.assert_allclose(boot.per_query["m"], per_query, atol=1e-12)
    assert boot.point["m", "cross_fit"] == pytest.approx(per_query.mean())


def test_every_subset_counts_for_the_reported_number():
    # Under a single tuning/test split, the tuning subsets never enter the
    # reported LDS; cross-fitted, moving any subset's ground truth moves it.
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(2, 12, 8))
    predictions = truth.mean(axis=0)[None] + rng.normal(size=(2, 12, 8))
    folds = Folds.of(8, 12, {"folds": 2, "seed": 0})
    grids = {"m": Grid(np.array([1.0, 2.0]), predictions)}
    base = two_way_bootstrap({}, truth, {"all": Split()}, 10, 0, grids=grids, folds=folds).point["m", "cross_fit"]
    for subset in range(12):
        changed = truth.copy()
        changed[:, subset] = changed[:, subset] * -3.0 + 1.0
        assert two_way_bootstrap({}, changed, {"all": Split()}, 10, 0, grids=grids, folds=folds).point["m", "cross_fit"] != base


def test_cross_fitting_is_not_fooled_by_a_grid_of_noise():
    # Twenty values that are all pure noise (true LDS 0 each): the best of
    # them on the reported data looks good, the cross-fitted value does not.
    rng = np.random.default_rng(6)
    in_sample, cross_fitted = [], []
    for _ in range(30):
        truth = rng.normal(size=(2, 16, 24)) + rng.normal(size=(1, 16, 24))
        noise = rng.normal(size=(20, 16, 24))
        in_sample.append(max(np.nanmean(spearman_per_query(p, truth.mean(axis=0))) for p in noise))
        folds = Folds.of(24, 16, {"folds": 2, "seed": 0})
        boot = two_way_bootstrap({}, truth, {"all": Split()}, 10, 0, grids={"noise": Grid(np.arange(20.0), noise)}, folds=folds)
        cross_fitted.append(boot.point["noise", "cross_fit"])
    assert np.mean(in_sample) > 0.08
    # The mean over 30 benchmarks of a quantity with expectation 0.
    assert abs(np.mean(cross_fitted)) < 0.04


def test_cross_fitted_interval_covers_the_known_answer():
    # One good value among noise: a predictor with Pearson correlation r to
    # the subset effect mu. With a noiseless ground truth its expected LDS
    # over the folds' 10 subsets is Moran's expected Spearman of r, the known
    # answer the interval should cover in most benchmarks.
    from ldsbench.evaluation.ceiling import expected_spearman

    rng = np.random.default_rng(7)
    r, n_subsets, n_queries = 0.8, 20, 30
    answer = expected_spearman(r, n_subsets // 2)
    covered, estimates = 0, []
    for trial in range(25):
        mu = rng.normal(size=(n_subsets, n_queries))
        truth = np.stack([mu, mu])
        good = r * mu + np.sqrt(1 - r**2) * rng.normal(size=mu.shape)
        grid = Grid(np.arange(4.0), np.stack([good, *rng.normal(size=(3, n_subsets, n_queries))]))
        folds = Folds.of(n_queries, n_subsets, {"folds": 2, "seed": trial})
        boot = two_way_bootstrap({}, truth, {"all": Split()}, 200, trial, grids={"m": grid}, folds=folds)
        low, high = boot.interval(("m", "cross_fit"), 0.95)
        covered += low <= answer <= high
        estimates.append(boot.point["m", "cross_fit"])
    assert abs(np.mean(estimates) - answer) < 0.03
    assert covered / 25 >= 0.8
