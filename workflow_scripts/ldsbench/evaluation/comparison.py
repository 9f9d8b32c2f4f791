"""Comparing methods: intervals and paired differences from a two-way
bootstrap over queries and subsets, the cross-fitted tuned LDS
(``tuning``), the retraining ceiling, the noise-normalised LDS and the
query-agnostic control.

Every per-query LDS is a Spearman correlation over the same M subsets, so a
method's per-query values are correlated through those subsets; resampling
queries alone treats them as independent and understates the uncertainty.
Each bootstrap draw here resamples both

* the M subsets, with replacement, one draw shared by every variant, query
  and seed, and
* the queries, with replacement,

each within its strata (the items that belong to the same splits and the
same cross-fitting folds), so that a split's or a fold's resampled items
stay its own. It then recomputes every per-query LDS and the ceiling on each
split's resampled subsets and averages over the split's resampled queries.
A method tuned by cross-fitting (a :class:`Grid`) is tuned again in every
draw, on the draw's resampled tuning folds, so the interval holds the
variation of the choice too. Every variant sees the same draws, so the
difference of two variants' draws is a paired difference.

Shapes:

* ``predictions[name]`` ``[M, Q]``: group predictions g_j(q) of one variant
  (a method at one damping, or a control).
* ``truth_per_seed`` ``[K, M, Q]``: the ground truth before the seed mean.
* ``splits[name]`` a :class:`Split`: ``[Q]`` and ``[M]`` masks of the queries
  and subsets that split's estimates average over.
* ``grids[name]`` a :class:`Grid`: ``[L, M, Q]`` group predictions of every
  value of a method's grid, tuned by cross-fitting over ``folds``.

Memory: one sort order per ranked array, ``V x 4`` int64 ``[M, Q]`` arrays
with V = variants + K + 1 + (2 L per grid: its values and their controls);
paper scale, 11 methods with grids of 9, 100 x 1000: about 650 MB. The draws
kept are ``[B]`` per (variant, split). Time: B x S x V passes of a few
``[M, Q]`` gathers, S the number of distinct subset masks (every split's,
and every fold's with its complement; no sorting per draw).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from ldsbench.evaluation.ceiling import retraining_ceiling
from ldsbench.evaluation.lds import spearman_from_ranks, tie_groups
from ldsbench.evaluation.tuning import Folds, choose_tuned_value
from ldsbench.spec.method_types import CEILING

__all__ = [
    "CEILING",
    "CROSS_FIT",
    "Bootstrap",
    "Grid",
    "Split",
    "two_way_bootstrap",
    "cross_fitted",
    "interval",
    "query_agnostic_predictions",
    "holm_adjusted",
    "paired_differences",
    "pair_difference",
]

#: The split name of the cross-fitted estimates (``tuning``).
CROSS_FIT = "cross_fit"


@dataclass(frozen=True)
class Split:
    """The queries and subsets one split's estimates average over.

    Attributes:
        queries: ``[Q]`` bool mask, or None for every query.
        subsets: ``[M]`` bool mask, or None for every subset; each per-query
            LDS of the split is a Spearman correlation over these subsets.
    """

    queries: np.ndarray | None = None
    subsets: np.ndarray | None = None


@dataclass(frozen=True)
class Grid:
    """A method's group predictions at every value of its grid, tuned by
    cross-fitting in every draw (``tuning``).

    Attributes:
        values: ``[L]`` the damping or lambda of each row, the default first
            (NaN for a method without one, L = 1).
        predictions: ``[L, M, Q]``.
        followers: ``{name: [L, M, Q]}`` variants read at the values this
            grid's cells choose, not tuned themselves (the method's
            query-agnostic control).
        untuned: a name under which the grid's first value (the default),
            read in every cell under the same protocol, is also reported;
            None: not reported.
    """

    values: np.ndarray
    predictions: np.ndarray
    followers: dict = field(default_factory=dict)
    untuned: object = None


def _mask(mask, size: int, what: str, split: str) -> np.ndarray:
    if mask is None:
        return np.ones(size, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (size,):
        raise ValueError(f"split {split!r}: the {what} mask must be [{size}], got shape {mask.shape}")
    if not mask.any():
        raise ValueError(f"split {split!r} holds no {what}")
    return mask


def _strata(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Indices of the items of each distinct membership pattern across the
    masks: resampling within these keeps every split's items its own."""
    patterns = np.stack(masks, axis=1)
    _, labels = np.unique(patterns, axis=0, return_inverse=True)
    labels = labels.ravel()
    return [np.flatnonzero(labels == label) for label in np.unique(labels)]


def _resample(rng, strata: list[np.ndarray], size: int) -> np.ndarray:
    counts = np.zeros(size)
    for members in strata:
        np.add.at(counts, rng.choice(members, size=members.size, replace=True), 1.0)
    return counts


@dataclass(frozen=True)
class Bootstrap:
    """Estimates of every (variant, split) on the data and over the draws.

    Attributes:
        point: ``{(variant, split): mean LDS over the split's queries}``; for
            the variant :data:`CEILING`, the retraining ceiling. A grid and
            its followers are under the split :data:`CROSS_FIT`.
        draws: the same keys, ``[B]`` values over the bootstrap draws (NaN
            where a draw leaves the statistic undefined).
        chosen: ``{grid: [F, F] int}`` the value index each cell (query fold
            a, subset fold b) chose on the data.
        per_query: ``{grid or follower: [Q]}`` cross-fitted per-query LDS on
            the data.
    """

    point: dict
    draws: dict
    chosen: dict = field(default_factory=dict)
    per_query: dict = field(default_factory=dict)

    def interval(self, key, level: float) -> tuple[float, float]:
        return interval(self.draws[key], level)

    def ratio(self, numerator, denominator, level: float) -> tuple[float, float, float]:
        """``point[numerator] / point[denominator]`` with its interval over the
        draws; NaN where the denominator is not positive."""

        def divide(a, b):
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(b > 0, a / b, np.nan)

        point = float(divide(self.point[numerator], self.point[denominator]))
        return (point, *interval(divide(self.draws[numerator], self.draws[denominator]), level))


def interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite draws; NaN if there are none."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    draws = np.asarray(draws, dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    if not finite.size:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


class _ResampledRanks:
    """Ranks of every column of an ``[M, Q]`` array within any resample of
    its rows, from one sort.

    A resample that holds row j c_j times gives row j the average rank
    (count of the resample strictly below its value) + (count equal + 1) / 2,
    the rank ``lds.average_ranks`` gives every copy, so Spearman on the
    resample is the count-weighted Pearson correlation of these ranks. A draw
    then costs a few ``[M, Q]`` gathers and a cumulative sum, not a sort.
    """

    def __init__(self, values: np.ndarray):
        values = np.asarray(values, dtype=np.float64)
        self.has_nan = np.isnan(values).any(axis=0)
        self.order, first, last = tie_groups(values)
        position = np.argsort(self.order, axis=0)
        # Each row index as an index into the flattened array, so that a
        # draw's gathers along axis 0 (`take_along_axis`) are plain `take`s:
        # the same elements, without take_along_axis's per-call overhead,
        # which dominates on small arrays.
        n_columns = values.shape[1]
        columns = np.arange(n_columns)
        self.first, self.last, self.position = (index * n_columns + columns for index in (first, last, position))

    def centred(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[M, Q]`` ranks of each row in the resample with multiplicities
        ``counts`` [M], centred on their count-weighted mean, and the columns
        without a rank correlation (holding a NaN): the form of
        ``lds.centred_ranks``, for ``lds.spearman_from_ranks`` with
        ``weights=counts``."""
        ordered_counts = counts[self.order]
        through = np.cumsum(ordered_counts, axis=0)
        below = (through - ordered_counts).take(self.first)
        group_through = through.take(self.last)
        ranks = (below + (group_through - below + 1) / 2.0).take(self.position)
        return ranks - (counts @ ranks) / counts.sum(), self.has_nan


def _weighted_nanmean(values: np.ndarray, weights: np.ndarray) -> float:
    keep = np.isfinite(values) & (weights > 0)
    return float(np.average(values[keep], weights=weights[keep])) if keep.any() else float("nan")


def cross_fitted(test_lds, chosen: np.ndarray, query_folds: np.ndarray) -> np.ndarray:
    """Per-query cross-fitted LDS: query q of fold a gets the mean over the
    subset folds b of its LDS over b at the value cell (a, b) chose.

    Args:
        test_lds: ``test_lds(b, index)`` -> ``[Q]`` per-query LDS over the
            subsets of fold b at value ``index``.
        chosen: ``[F, F]`` value index of every cell (a, b).
        query_folds: ``[Q]`` fold of every query.

    Returns:
        ``[Q]``; NaN where no subset fold gives the query an LDS.
    """
    n_folds = chosen.shape[0]
    values = np.full((n_folds, query_folds.size), np.nan)
    for a, b in itertools.product(range(n_folds), repeat=2):
        rows = query_folds == a
        values[b, rows] = test_lds(b, int(chosen[a, b]))[rows]
    # np.nanmean's arithmetic (NaN as 0, sum, divide by the count), without
    # its warning on all-NaN queries, which stay NaN.
    missing = np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(missing, 0.0, values).sum(axis=0) / (~missing).sum(axis=0)


def two_way_bootstrap(
    predictions: dict,
    truth_per_seed: np.ndarray,
    splits: dict,
    n_resamples: int,
    seed: int,
    grids: dict | None = None,
    folds: Folds | None = None,
) -> Bootstrap:
    """Mean LDS of every variant on every split, of every grid cross-fitted
    over ``folds``, and the ceiling, on the data and over ``n_resamples``
    draws that resample subsets and queries.

    A per-query LDS depends only on the subsets drawn, so each draw computes
    it once per query, variant and distinct subset mask, and the query
    resample weights queries by how often they were drawn. A grid is tuned in
    every draw: each cell (query fold a, subset fold b) chooses the value
    with the highest weighted mean LDS over the queries outside a, each over
    the resampled subsets outside b (``tuning.choose_tuned_value``), and is
    read on the queries of a over the resampled subsets of b
    (:func:`cross_fitted`). The cross-fitted ceiling is the mean over subset
    folds b of the ceiling over b's subsets, so it is comparable with the
    cross-fitted LDS (every correlation over M/F subsets).

    Args:
        predictions: ``{variant: [M, Q]}`` group predictions.
        truth_per_seed: ``[K, M, Q]``; the LDS uses its seed mean, the ceiling
            (reported when K >= 2) its seeds.
        splits: ``{split: Split}``, e.g. ``{"all": Split()}``.
        n_resamples: B, the number of draws.
        seed: seed of the numpy Generator, so the draws are reproducible.
        grids: ``{name: Grid}`` tuned by cross-fitting (needs ``folds``).
        folds: the :class:`tuning.Folds` of queries and subsets.

    Returns:
        A :class:`Bootstrap`.
    """
    grids = grids or {}
    truth_per_seed = np.asarray(truth_per_seed, dtype=np.float64)
    if truth_per_seed.ndim != 3:
        raise ValueError(f"truth_per_seed must be [K, M, Q], got shape {truth_per_seed.shape}")
    n_seeds, n_subsets, n_queries = truth_per_seed.shape
    for name, values in predictions.items():
        if np.shape(values) != (n_subsets, n_queries):
            raise ValueError(f"predictions of {name} have shape {np.shape(values)}, expected [M, Q] = [{n_subsets}, {n_queries}]")
    for name, grid in grids.items():
        for label, values in [(name, grid.predictions), *grid.followers.items()]:
            if np.shape(values) != (len(grid.values), n_subsets, n_queries):
                raise ValueError(f"predictions of {label} have shape {np.shape(values)}, expected [L, M, Q] = [{len(grid.values)}, {n_subsets}, {n_queries}]")
    if grids and folds is None:
        raise ValueError("cross-fitted grids need the folds of queries and subsets")
    if folds is not None and (folds.queries.shape != (n_queries,) or folds.subsets.shape != (n_subsets,)):
        raise ValueError(f"folds must be [Q] = [{n_queries}] and [M] = [{n_subsets}], got {folds.queries.shape} and {folds.subsets.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    queries = {name: _mask(split.queries, n_queries, "queries", name) for name, split in splits.items()}
    subsets = {name: _mask(split.subsets, n_subsets, "subsets", name) for name, split in splits.items()}
    # Splits over the same subsets share their per-query LDS.
    by_subsets = {}
    for name, mask in subsets.items():
        by_subsets.setdefault(mask.tobytes(), (mask, []))[1].append(name)
    query_masks, subset_masks = list(queries.values()), list(subsets.values())
    if folds is not None:
        query_masks += [folds.queries == a for a in range(folds.n_folds)]
        subset_masks += [folds.subsets == b for b in range(folds.n_folds)]
    query_strata, subset_strata = _strata(query_masks), _strata(subset_masks)

    truth = _ResampledRanks(truth_per_seed.mean(axis=0))
    variants = {name: _ResampledRanks(values) for name, values in predictions.items()}
    seeds = [_ResampledRanks(values) for values in truth_per_seed] if n_seeds >= 2 else []
    ranked_grids = {
        name: (grid, [_ResampledRanks(v) for v in grid.predictions], {f: [_ResampledRanks(v) for v in rows] for f, rows in grid.followers.items()})
        for name, grid in grids.items()
    }

    def ceiling(ranks, counts, query_weights, n_in_mask):
        pairs = [spearman_from_ranks(ranks[a], ranks[b], counts) for a in range(n_seeds) for b in range(a + 1, n_seeds)]
        return retraining_ceiling(np.mean(pairs, axis=0), n_seeds, n_in_mask, weights=query_weights)

    def statistics(subset_counts, query_counts, details=None):
        out = {}
        for subset_mask, names in by_subsets.values():
            counts = subset_counts * subset_mask
            truth_ranks = truth.centred(counts)
            for variant, ranker in variants.items():
                lds = spearman_from_ranks(ranker.centred(counts), truth_ranks, counts)
                for split in names:
                    out[variant, split] = _weighted_nanmean(lds[queries[split]], query_counts[queries[split]])
            if seeds:
                ranks = [ranker.centred(counts) for ranker in seeds]
                for split in names:
                    mask = queries[split]
                    out[CEILING, split] = ceiling(ranks, counts, query_counts * mask, int(subset_mask.sum()))
        if folds is None:
            return out
        # Cross-fitting: every per-query LDS over one fold's subsets or over
        # the others', computed at most once per draw, ranked array and
        # subset mask (with 2 folds, one fold's complement is the other fold).
        n_folds = folds.n_folds
        fold_masks = [folds.subsets == b for b in range(n_folds)]
        truth_ranks, computed = {}, {}

        def lds_over(label, ranker, mask):
            key = (label, mask.tobytes())
            if key not in computed:
                if mask.tobytes() not in truth_ranks:
                    truth_ranks[mask.tobytes()] = truth.centred(subset_counts * mask)
                counts = subset_counts * mask
                computed[key] = spearman_from_ranks(ranker.centred(counts), truth_ranks[mask.tobytes()], counts)
            return computed[key]

        for name, (grid, rankers, follower_rankers) in ranked_grids.items():
            chosen = np.zeros((n_folds, n_folds), dtype=np.int64)
            if len(grid.values) > 1:
                tuning = [np.stack([lds_over((name, i), r, ~fold_masks[b]) for i, r in enumerate(rankers)]) for b in range(n_folds)]
                for a, b in folds.cells():
                    chosen[a, b] = choose_tuned_value(grid.values, tuning[b], folds.queries != a, query_counts)[0]
            per_query = {}
            for label, row_rankers in [(name, rankers), *follower_rankers.items()]:
                per_query[label] = cross_fitted(lambda b, i, label=label, r=row_rankers: lds_over((label, i), r[i], fold_masks[b]), chosen, folds.queries)
            if grid.untuned is not None:
                per_query[grid.untuned] = cross_fitted(lambda b, i: lds_over((name, i), rankers[i], fold_masks[b]), np.zeros_like(chosen), folds.queries)
            for label, values in per_query.items():
                out[label, CROSS_FIT] = _weighted_nanmean(values, query_counts)
            if details is not None:
                details["chosen"][name] = chosen
                details["per_query"].update(per_query)
        if seeds:
            fold_ceilings = []
            for mask in fold_masks:
                counts = subset_counts * mask
                fold_ceilings.append(ceiling([ranker.centred(counts) for ranker in seeds], counts, query_counts, int(mask.sum())))
            out[CEILING, CROSS_FIT] = float(np.mean(fold_ceilings))
        return out

    details = {"chosen": {}, "per_query": {}}
    point = statistics(np.ones(n_subsets), np.ones(n_queries), details)
    draws = {key: np.empty(n_resamples) for key in point}
    rng = np.random.default_rng(seed)
    for b in range(n_resamples):
        subset_counts = _resample(rng, subset_strata, n_subsets)
        query_counts = _resample(rng, query_strata, n_queries)
        for key, value in statistics(subset_counts, query_counts).items():
            draws[key][b] = value
    return Bootstrap(point=point, draws=draws, chosen=details["chosen"], per_query=details["per_query"])


def query_agnostic_predictions(predictions: np.ndarray) -> np.ndarray:
    """The query-agnostic control of a method: every query predicted with the
    method's scores averaged over the *other* queries.

    g is linear in the scores, so the group prediction of the averaged scores
    tau_bar(i) = mean over q' != q of tau(q', i) is the mean of the other
    queries' group predictions. If this control reaches a method's LDS, the
    measurement mostly rewards overall subset quality, not attribution to
    the query.

    Args:
        predictions: ``[M, Q]`` group predictions, Q >= 2.

    Returns:
        ``[M, Q]``.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim != 2 or predictions.shape[1] < 2:
        raise ValueError(f"the query-agnostic control needs [M, Q] predictions with Q >= 2, got shape {predictions.shape}")
    total = predictions.sum(axis=1, keepdims=True)
    return (total - predictions) / (predictions.shape[1] - 1)


def holm_adjusted(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p_values = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p_values, kind="stable")
    m = p_values.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p_values[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def paired_differences(bootstrap: Bootstrap, variants: list, split: str, level: float) -> pd.DataFrame:
    """LDS difference of every pair of variants on one split, from the
    bootstrap's shared draws.

    For variants a before b in ``variants``: difference = LDS(a) - LDS(b), its
    percentile interval, the two-sided p-value 2 (1 - Phi(|difference| / se))
    with se the standard deviation of the paired draws (a percentile p-value
    cannot go below about 2 / B, too coarse for a Holm correction over many
    pairs), its Holm adjustment over all pairs given, and ``significant`` =
    adjusted p < 1 - level.

    Returns:
        Columns a, b, difference, ci_low, ci_high, p_value, p_holm, significant.
    """
    rows = []
    for a, b in itertools.combinations(variants, 2):
        diff = bootstrap.draws[a, split] - bootstrap.draws[b, split]
        diff = diff[np.isfinite(diff)]
        low, high = interval(diff, level)
        difference = bootstrap.point[a, split] - bootstrap.point[b, split]
        se = float(diff.std(ddof=1)) if diff.size > 1 else float("nan")
        if not (np.isfinite(difference) and np.isfinite(se)):
            p_value = float("nan")
        elif se == 0:
            p_value = 1.0 if difference == 0 else 0.0
        else:
            p_value = float(2.0 * norm.sf(abs(difference) / se))
        rows.append({"a": a, "b": b, "difference": difference, "ci_low": low, "ci_high": high, "p_value": p_value})
    frame = pd.DataFrame(rows, columns=["a", "b", "difference", "ci_low", "ci_high", "p_value"])
    frame["p_holm"] = holm_adjusted(frame["p_value"].fillna(1.0).to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_holm"] < 1.0 - level
    return frame


def pair_difference(pairs: pd.DataFrame, a, b) -> dict:
    """LDS(a) - LDS(b) from rows of :func:`paired_differences` (columns
    method_a, method_b, ...), whichever way round the pair is stored:
    difference, ci_low, ci_high (ordered), p_value, p_holm, significant."""
    match, sign = pairs[(pairs["method_a"] == a) & (pairs["method_b"] == b)], 1.0
    if match.empty:
        match, sign = pairs[(pairs["method_a"] == b) & (pairs["method_b"] == a)], -1.0
    if match.empty:
        raise KeyError(f"no paired difference of {a!r} and {b!r}")
    pair = match.iloc[0]
    low, high = sorted([sign * pair["ci_low"], sign * pair["ci_high"]])
    return {
        "difference": sign * pair["difference"],
        "ci_low": low,
        "ci_high": high,
        "p_value": pair["p_value"],
        "p_holm": pair["p_holm"],
        "significant": bool(pair["significant"]),
    }
