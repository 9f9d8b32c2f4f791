"""Damping chosen on the tuning queries, reported on the test queries."""

import numpy as np
import pandas as pd
import pytest

from ldsbench.tuning import tuned_results, tuning_split


def test_split_is_reproducible_and_disjoint():
    mask = tuning_split(10, 0.5, seed=3)
    assert mask.sum() == 5 and mask.tolist() == tuning_split(10, 0.5, seed=3).tolist()
    assert mask.tolist() != tuning_split(10, 0.5, seed=4).tolist()
    with pytest.raises(ValueError, match="both need at least 1"):
        tuning_split(3, 0.1, seed=0)


def _sweep(table):
    """table: {damping: [lds of query 0..Q-1]}"""
    return pd.DataFrame([dict(damping=d, query=q, lds=v) for d, values in table.items() for q, v in enumerate(values)])


def test_tuned_value_is_chosen_on_tuning_queries_only_and_reported_on_test_queries():
    tuning = np.array([True, True, False, False])
    # 1e-4 is best on the tuning queries, 1e-2 would be best on the test ones:
    # the test split must not leak into the choice.
    sweep = _sweep({1e-8: [0.1, 0.1, 0.2, 0.2], 1e-4: [0.5, 0.5, 0.3, 0.3], 1e-2: [0.0, 0.0, 0.9, 0.9]})
    result = tuned_results(sweep, 1e-8, tuning)
    assert result["tuned_damping"] == 1e-4
    assert result["tuning_lds"] == pytest.approx(0.5)
    assert result["test_tuned_lds"] == pytest.approx(0.3)
    assert result["test_default_lds"] == pytest.approx(0.2)
    assert result["n_test"] == 2


def test_ties_go_to_more_damping_and_methods_without_a_grid_are_their_own_default():
    tuning = np.array([True, False, False])
    tie = tuned_results(_sweep({1e-6: [0.4, 0.1, 0.1], 1e-2: [0.4, 0.2, 0.2]}), 1e-6, tuning)
    assert tie["tuned_damping"] == 1e-2
    plain = tuned_results(_sweep({np.nan: [0.3, 0.1, 0.5]}), np.nan, tuning)
    assert np.isnan(plain["tuned_damping"]) and plain["test_tuned_lds"] == plain["test_default_lds"] == pytest.approx(0.3)


def test_nan_queries_are_left_out_and_an_unknown_default_is_refused():
    tuning = np.array([True, True, False, False])
    result = tuned_results(_sweep({1e-8: [np.nan, 0.2, 0.4, np.nan]}), 1e-8, tuning)
    assert result["tuning_lds"] == pytest.approx(0.2) and result["test_default_lds"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="not among the evaluated values"):
        tuned_results(_sweep({1e-8: [0.1] * 4}), 1e-3, tuning)
