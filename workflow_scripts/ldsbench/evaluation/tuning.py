"""Honest hyperparameters: damping (or lambda) chosen by cross-fitting, so
that the reported LDS never rests on data that chose it, and every subset
and every query counts for it.

Papers often pick the damping that maximises LDS on the very queries and
subsets they report, which flatters every method with a grid. Here the
queries and the M subsets are each split into F folds (:class:`Folds`,
``tuning.folds``, default 2). For every cell (a, b) of a query fold a and a
subset fold b, the value is chosen on the other folds (the queries outside a,
each LDS a Spearman correlation over the subsets outside b) and read on the
cell (the queries of a, each LDS over the subsets of b). A query's
cross-fitted LDS is the mean over the subset folds b of its LDS over b at
the value its cell chose; the method's cross-fitted LDS is the mean over
queries. The tuning and the reading of a cell share no query and no model:
sharing the subsets would let the choice fit the subset-level noise of the
ground truth (a subset whose models happen to be poor on every query) that
the reported number also holds.

Every per-query LDS of the cross-fit is a Spearman correlation over M/F
subsets, not M. The expected Spearman of the same predictor grows slightly
with the number of pairs (``lds.expected_spearman``: at a Pearson
correlation of 0.7, 0.62 over 8 subsets against 0.65 over 16), so a
cross-fitted LDS is comparable with other cross-fitted values and with the
cross-fitted ceiling, not with an LDS over all M subsets. Methods without a
grid go through the same protocol with their one value, so every method is
read on equal terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldsbench.spec.config import MIN_SUBSETS_PER_FOLD


def fold_labels(n_items: int, n_folds: int, seed, items: str = "queries", minimum: int = 1) -> np.ndarray:
    """``[n_items]`` int fold of every item: a random permutation by ``seed``
    (anything ``numpy.random.default_rng`` takes) cut into ``n_folds`` parts
    whose sizes differ by at most one.

    Raises:
        ValueError: if a fold would hold fewer than ``minimum`` items.
    """
    if n_folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {n_folds}")
    if n_items // n_folds < minimum:
        raise ValueError(f"{n_folds} folds of {n_items} {items} leave {n_items // n_folds} in the smallest fold; each needs at least {minimum}")
    labels = np.empty(n_items, dtype=np.int64)
    for fold, members in enumerate(np.array_split(np.random.default_rng(seed).permutation(n_items), n_folds)):
        labels[members] = fold
    return labels


@dataclass(frozen=True)
class Folds:
    """Which fold every query and every subset belongs to.

    Attributes:
        queries: ``[Q]`` int in ``[0, F)``.
        subsets: ``[M]`` int in ``[0, F)``.
    """

    queries: np.ndarray
    subsets: np.ndarray

    @classmethod
    def of(cls, n_queries: int, n_subsets: int, settings: dict) -> Folds:
        """The folds of the config's ``tuning`` block: ``folds`` of the queries
        and of the subsets, both drawn from ``seed`` (the subsets from a
        stream of their own, so the query folds do not depend on M)."""
        seed, n_folds = settings["seed"], settings["folds"]
        return cls(
            queries=fold_labels(n_queries, n_folds, seed, "queries"),
            subsets=fold_labels(n_subsets, n_folds, (seed, 1), "subsets", MIN_SUBSETS_PER_FOLD),
        )

    @property
    def n_folds(self) -> int:
        return int(self.queries.max()) + 1

    def cells(self):
        """(a, b) for every query fold a and subset fold b."""
        return [(a, b) for a in range(self.n_folds) for b in range(self.n_folds)]


def choose_tuned_value(values: np.ndarray, per_query: np.ndarray, tuning: np.ndarray, weights: np.ndarray | None = None) -> tuple[int, float]:
    """Index of the tuned value: the highest mean LDS over the tuning queries.

    Args:
        values: ``[L]`` the damping (or lambda) of every evaluated variant, the
            untuned default first; NaN for a method without one.
        per_query: ``[L, Q]`` per-query LDS of every value, over the tuning
            subsets (NaN queries are left out of the means).
        tuning: ``[Q]`` boolean mask of the tuning queries.
        weights: ``[Q]`` query weights (a bootstrap's multiplicities); None
            weighs the tuning queries equally.

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
    weights = np.ones(tuning.size) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = per_query[:, tuning]
    w = np.where(np.isfinite(rows), weights[tuning], 0.0)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(total > 0, (np.nan_to_num(rows) * w).sum(axis=1) / total, -np.inf)
    best = max(range(values.size), key=lambda i: (means[i], np.nan_to_num(values[i], nan=0.0), -i))
    if not np.isfinite(means[best]):
        return 0, float("nan")
    return best, float(means[best])


def consensus_value(chosen: np.ndarray) -> float:
    """The value the cells chose most often (ties to the larger value): the
    one to name as "the tuned value"; NaN for a method without one."""
    chosen = np.asarray(chosen, dtype=np.float64).ravel()
    if np.isnan(chosen).all():
        return float("nan")
    values, counts = np.unique(chosen[np.isfinite(chosen)], return_counts=True)
    return float(max(zip(counts, values))[1])
