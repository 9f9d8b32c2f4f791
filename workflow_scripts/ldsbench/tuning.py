"""Honest hyperparameters: damping (or lambda) chosen on a tuning split that
shares neither queries nor subsets with the split it is reported on.

Papers often pick the damping that maximises LDS on the very queries and
subsets they report, which flatters every method with a grid. Here the
queries and the M subsets are each split once (:class:`TuningSplit`). A
method's tuned value is the one with the highest mean LDS over the tuning
queries, each LDS a Spearman correlation over the tuning subsets only; the
summary reports, on the test queries over the test subsets, the LDS of that
tuned value next to the LDS of the method's untuned default. Sharing the
subsets would let the choice fit the subset-level noise of the ground truth
(a subset whose models happen to be poor on every query) that the reported
number also contains. Methods without a grid have tuned == default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A rank correlation needs at least this many subsets on each side.
MIN_SUBSETS_PER_SIDE = 2


def split_sizes(n_items: int, fraction: float) -> tuple[int, int]:
    """(tuning, test) sizes of a split of ``n_items`` at ``fraction``."""
    size = int(round(fraction * n_items))
    return size, n_items - size


def tuning_split(n_items: int, fraction: float, seed, items: str = "queries", minimum: int = 1) -> np.ndarray:
    """Boolean ``[n_items]`` mask of the tuning items: round(fraction * n) of
    them, drawn without replacement by ``seed`` (anything
    ``numpy.random.default_rng`` takes); the rest are the test items.

    Raises:
        ValueError: if either side would hold fewer than ``minimum`` items.
    """
    size, rest = split_sizes(n_items, fraction)
    if min(size, rest) < minimum:
        raise ValueError(f"a tuning fraction of {fraction} of {n_items} {items} leaves {size} tuning and {rest} test {items}; both need at least {minimum}")
    mask = np.zeros(n_items, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_items, size=size, replace=False)] = True
    return mask


@dataclass(frozen=True)
class TuningSplit:
    """Which queries and which subsets tune; the rest are reported.

    Attributes:
        queries: ``[Q]`` bool, True for the tuning queries.
        subsets: ``[M]`` bool, True for the tuning subsets.
    """

    queries: np.ndarray
    subsets: np.ndarray

    @classmethod
    def of(cls, n_queries: int, n_subsets: int, settings: dict) -> TuningSplit:
        """The split of the config's ``tuning`` block: ``fraction`` of the
        queries and ``subset_fraction`` of the subsets, both drawn from
        ``seed`` (the subsets from a stream of their own, so the query split
        does not depend on M)."""
        seed = settings["seed"]
        return cls(
            queries=tuning_split(n_queries, settings["fraction"], seed, "queries"),
            subsets=tuning_split(n_subsets, settings["subset_fraction"], (seed, 1), "subsets", MIN_SUBSETS_PER_SIDE),
        )


def choose_tuned_value(values: np.ndarray, per_query: np.ndarray, tuning: np.ndarray) -> tuple[int, float]:
    """Index of the tuned value: the highest mean LDS over the tuning queries.

    Args:
        values: ``[L]`` the damping (or lambda) of every evaluated variant, the
            untuned default first; NaN for a method without one.
        per_query: ``[L, Q]`` per-query LDS of every value, over the tuning
            subsets (NaN queries are left out of the means).
        tuning: ``[Q]`` boolean mask of the tuning queries.

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


def choose_on_tuning_split(values: np.ndarray, predictions: np.ndarray, truth: np.ndarray, split: TuningSplit) -> tuple[int, float]:
    """:func:`choose_tuned_value` with every per-query LDS computed over the
    tuning subsets only, so neither the test queries nor the test subsets'
    models inform the choice.

    Args:
        values: ``[L]`` as in :func:`choose_tuned_value`.
        predictions: ``[L, M, Q]`` group predictions of every value.
        truth: ``[M, Q]`` the seed-mean ground truth.
        split: the :class:`TuningSplit`.
    """
    from .lds import spearman_per_query

    rows = split.subsets
    per_query = np.stack([spearman_per_query(p[rows], truth[rows]) for p in predictions])
    return choose_tuned_value(values, per_query, split.queries)
