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


def choose_tuned_value(values: np.ndarray, per_query: np.ndarray, tuning: np.ndarray) -> tuple[int, float]:
    """Index of the tuned value: the highest mean LDS over the tuning queries.

    Args:
        values: ``[L]`` the damping (or lambda) of every evaluated variant, the
            untuned default first; NaN for a method without one.
        per_query: ``[L, Q]`` per-query LDS of every value (NaN queries are
            left out of the means).
        tuning: ``[Q]`` boolean mask of the tuning queries (``tuning_split``).

    Returns:
        ``(index into values, its mean tuning LDS)``. Ties go to the larger
        value (more damping is the more conservative choice), then to the
        earlier index; a value with no defined tuning query never wins
        unless none has one, and then the default (index 0) is kept.
    """
    values = np.asarray(values, dtype=np.float64)
    per_query = np.asarray(per_query, dtype=np.float64)
    if per_query.shape != (values.size, tuning.size):
        raise ValueError(f"per_query must be [L, Q] = [{values.size}, {tuning.size}], got shape {per_query.shape}")
    means = []
    for row in per_query[:, tuning]:
        finite = row[np.isfinite(row)]
        means.append(float(finite.mean()) if finite.size else -np.inf)
    best = max(range(values.size), key=lambda i: (means[i], np.nan_to_num(values[i], nan=0.0), -i))
    if not np.isfinite(means[best]):
        return 0, float("nan")
    return best, means[best]
