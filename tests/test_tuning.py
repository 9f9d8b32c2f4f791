"""Damping chosen on the tuning queries, reported on the test queries."""

import numpy as np
import pytest

from ldsbench.tuning import choose_tuned_value, tuning_split


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
