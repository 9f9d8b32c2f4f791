"""Damping chosen on the tuning queries, reported on the test queries."""

import numpy as np
import pytest

from ldsbench.tuning import TuningSplit, choose_on_tuning_split, choose_tuned_value, tuning_split


def test_split_is_reproducible_and_disjoint():
    mask = tuning_split(10, 0.5, seed=3)
    assert mask.sum() == 5 and mask.tolist() == tuning_split(10, 0.5, seed=3).tolist()
    assert mask.tolist() != tuning_split(10, 0.5, seed=4).tolist()
    with pytest.raises(ValueError, match="both need at least 1"):
        tuning_split(3, 0.1, seed=0)


def _choose(table, tuning):
    """table: {value: [lds of query 0..Q-1]}, the default first."""
    values = np.array(list(table), dtype=float)
    return choose_tuned_value(values, np.array(list(table.values()), dtype=float), np.asarray(tuning))


def test_tuned_value_is_chosen_on_tuning_queries_only():
    tuning = np.array([True, True, False, False])
    # 1e-4 is best on the tuning queries, 1e-2 would be best on the test ones:
    # the test split must not leak into the choice.
    index, score = _choose({1e-8: [0.1, 0.1, 0.2, 0.2], 1e-4: [0.5, 0.5, 0.3, 0.3], 1e-2: [0.0, 0.0, 0.9, 0.9]}, tuning)
    assert index == 1 and score == pytest.approx(0.5)


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


def test_tuning_split_holds_out_subsets_as_well_as_queries():
    settings = {"fraction": 0.5, "subset_fraction": 0.5, "seed": 3}
    split = TuningSplit.of(10, 16, settings)
    assert split.subsets.sum() == 8 and split.queries.sum() == 5
    # The query split does not depend on M; the subset split is reproducible.
    assert split.queries.tolist() == tuning_split(10, 0.5, seed=3).tolist() == TuningSplit.of(10, 30, settings).queries.tolist()
    assert split.subsets.tolist() == TuningSplit.of(10, 16, settings).subsets.tolist()
    with pytest.raises(ValueError, match="3 subsets leaves 2 tuning and 1 test subsets; both need at least 2"):
        TuningSplit.of(10, 3, settings)


def test_tuned_value_never_sees_the_test_subsets():
    # Value 0 predicts the truth on the tuning subsets and value 1 on the test
    # subsets; every query tunes. Choosing over all subsets would be a coin
    # toss weighted by the test subsets (more of them); the choice must be 0.
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(12, 4))
    split = TuningSplit(queries=np.array([True, True, True, False]), subsets=np.arange(12) < 4)
    on_tuning, on_test = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    on_tuning[split.subsets], on_test[~split.subsets] = truth[split.subsets], truth[~split.subsets]
    index, score = choose_on_tuning_split(np.array([1e-4, 1e-2]), np.stack([on_tuning, on_test]), truth, split)
    assert index == 0 and score == pytest.approx(1.0)
