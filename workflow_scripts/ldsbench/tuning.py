"""Honest hyperparameters: damping (or lambda) chosen on a tuning split of the
queries and reported on the disjoint test split.

Papers often pick the damping that maximises LDS on the very queries and
subsets they report, which flatters every method with a grid. Here the
queries are split once (``tuning_split``); a method's tuned value is the one
with the highest mean LDS over the tuning queries, and the summary reports,
on the test queries only, the LDS of that tuned value next to the LDS of the
method's untuned default. Methods without a grid have tuned == default.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .lds import bootstrap_mean_ci


def tuning_split(n_queries: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean [Q] mask of the tuning queries: round(fraction * Q) of them,
    drawn without replacement by ``seed``; the rest are the test queries."""
    size = int(round(fraction * n_queries))
    if not 1 <= size < n_queries:
        raise ValueError(
            f"a tuning fraction of {fraction} of {n_queries} queries leaves {size} tuning and {n_queries - size} test queries; both need at least 1"
        )
    mask = np.zeros(n_queries, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_queries, size=size, replace=False)] = True
    return mask


def _per_query(rows: pd.DataFrame, n_queries: int) -> np.ndarray:
    lds = np.full(n_queries, np.nan)
    lds[rows["query"].to_numpy(dtype=int)] = rows["lds"].to_numpy(dtype=float)
    return lds


def tuned_results(sweep: pd.DataFrame, default: float, tuning: np.ndarray) -> dict:
    """Tuned value and test-split LDS of one (method, measurement).

    Args:
        sweep: per-query LDS for every value evaluated, columns damping
            (the damping or lambda; NaN for methods without one), query, lds.
        default: the method's configured (untuned) value; NaN if it has none.
        tuning: [Q] boolean mask of tuning queries (``tuning_split``).

    Returns:
        ``{"tuned_damping", "tuning_lds", "test_default_lds", "test_default_ci_low",
        "test_default_ci_high", "test_tuned_lds", "test_tuned_ci_low",
        "test_tuned_ci_high", "n_test"}``.
    """
    values = sweep["damping"].to_numpy(dtype=float)
    by_value = {}
    for key in np.unique(values[~np.isnan(values)]):
        by_value[float(key)] = _per_query(sweep[values == key], len(tuning))
    if not by_value:  # no damping or lambda: nothing to tune
        by_value, default = {float("nan"): _per_query(sweep, len(tuning))}, float("nan")
    elif float(default) not in by_value:
        raise ValueError(f"the default value {default} is not among the evaluated values {sorted(by_value)}")
    keys = list(by_value)
    means = [np.nanmean(by_value[k][tuning]) if np.isfinite(by_value[k][tuning]).any() else -np.inf for k in keys]
    # Highest tuning LDS; ties go to the larger value (more damping is the
    # more conservative choice).
    best = max(range(len(keys)), key=lambda i: (means[i], np.nan_to_num(keys[i], nan=0.0)))
    tuned, best_score = keys[best], means[best]
    default_key = keys[0] if np.isnan(keys[0]) else float(default)
    test = ~tuning
    default_stats = bootstrap_mean_ci(by_value[default_key][test])
    tuned_stats = bootstrap_mean_ci(by_value[tuned][test])
    return {
        "tuned_damping": float(tuned),
        "tuning_lds": float(best_score) if np.isfinite(best_score) else float("nan"),
        "test_default_lds": default_stats["mean"],
        "test_default_ci_low": default_stats["ci_low"],
        "test_default_ci_high": default_stats["ci_high"],
        "test_tuned_lds": tuned_stats["mean"],
        "test_tuned_ci_low": tuned_stats["ci_low"],
        "test_tuned_ci_high": tuned_stats["ci_high"],
        "n_test": int(test.sum()),
    }
