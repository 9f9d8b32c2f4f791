"""Linear Datamodeling Score (LDS, Park et al. 2023).

Notation and array shapes used throughout:

* ``scores``  ``[Q, N]``: attribution tau(q, i) of training example i for
  query q.
* ``mask``    ``[M, N]``: boolean membership of the M training subsets S_j.
* ``truth``   ``[M, Q]``: ground truth y_j(q), the measurement of query q
  under the model retrained on S_j, averaged over seeds; or ``[K, M, Q]``
  before that average.

LDS(q) is the Spearman rank correlation over subsets j of the group
prediction g_j(q) = sum_{i in S_j} tau(q, i) and y_j(q). A query whose
prediction or truth is constant over subsets has no rank correlation; its
LDS is NaN, and :func:`bootstrap_mean_ci` reports how many such queries it
left out.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "group_predictions",
    "spearman_per_query",
    "lds_per_query",
    "bootstrap_mean_ci",
]


def group_predictions(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Group predictions g_j(q) = sum of tau(q, i) over i in S_j.

    Args:
        scores: ``[Q, N]`` attribution scores.
        mask: ``[M, N]`` boolean subset membership.

    Returns:
        ``[M, Q]`` float64 array.
    """
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.asarray(mask)
    if scores.ndim != 2 or mask.ndim != 2:
        raise ValueError(f"scores and mask must be 2-D, got shapes {scores.shape} and {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if scores.shape[1] != mask.shape[1]:
        raise ValueError(f"scores has {scores.shape[1]} training columns but mask has {mask.shape[1]}")
    # A 0/1 matrix product sums exactly the selected columns per subset.
    return mask.astype(np.float64) @ scores.T


def spearman_per_query(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Spearman rank correlation over subsets, one value per query.

    Ties receive average ranks. A column in which either side is constant
    (or holds a NaN) gives NaN.

    Args:
        predictions: ``[M, Q]``.
        truth: ``[M, Q]``.

    Returns:
        ``[Q]`` float64 array of correlations in [-1, 1] or NaN.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if predictions.shape != truth.shape or predictions.ndim != 2:
        raise ValueError(f"predictions and truth must be 2-D of equal shape [M, Q], got {predictions.shape} and {truth.shape}")
    if predictions.shape[0] < 2:
        raise ValueError(f"a rank correlation needs at least 2 subsets, got M={predictions.shape[0]}")

    return spearman_from_ranks(centred_ranks(predictions), centred_ranks(truth))


def centred_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average-tie ranks over axis 0, centred per column, and which columns
    have no rank correlation (constant or holding a NaN).

    Splitting ranking from correlating lets a caller rank one side (the
    ground truth) once for many predictions.

    Args:
        values: ``[M, Q]``.

    Returns:
        ``([M, Q] float64 centred ranks, [Q] bool invalid)``.
    """
    values = np.asarray(values, dtype=np.float64)
    # Constancy is judged on the raw values so that it does not depend on
    # floating-point noise in the centred ranks.
    invalid = (np.ptp(values, axis=0) == 0) | np.isnan(values).any(axis=0)
    ranks = average_ranks(values)
    return ranks - ranks.mean(axis=0), invalid


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1 to M over axis 0 of ``values`` ``[M, Q]``, tied values given
    the mean of their ranks, a column holding a NaN all NaN: the values of
    ``scipy.stats.rankdata(values, method="average", axis=0)`` (half-integers,
    exact in float64), without the import of ``scipy.stats``, which would
    double an LDS job's start-up."""
    order, first, last = tie_groups(values)
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    ranks[:, np.isnan(values).any(axis=0)] = np.nan
    return ranks


def tie_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every column of ``values`` ``[M, Q]`` sorted: its stable sort order
    (NaN last), and at each sorted position the sorted positions of the
    first and last member of its group of equal values; all ``[M, Q]``."""
    n_rows = values.shape[0]
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    rows = np.arange(n_rows)[:, None]
    starts = np.ones(ordered.shape, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, rows, 0), axis=0)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, rows, n_rows - 1), axis=0), axis=0), axis=0)
    return order, first, last


def spearman_from_ranks(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """Spearman correlation per column of two :func:`centred_ranks` results
    (the Pearson correlation of the ranks); NaN where either is invalid or
    has no rank variance.

    ``weights`` ``[M]`` weigh the rows (a bootstrap's multiplicities, with
    ranks centred on their weighted mean); None weighs them equally."""
    (ra, invalid_a), (rb, invalid_b) = first, second
    w = 1.0 if weights is None else np.asarray(weights, dtype=np.float64)[:, None]
    num = (w * ra * rb).sum(axis=0)
    den = np.sqrt((w * ra * ra).sum(axis=0) * (w * rb * rb).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(num / den, -1.0, 1.0)
    # A side constant over the rows has no rank variance: 0 / 0 is NaN.
    rho[invalid_a | invalid_b | (den == 0)] = np.nan
    return rho


def _mean_truth(truth: np.ndarray) -> np.ndarray:
    """Average ``[K, M, Q]`` ground truth over seeds; pass ``[M, Q]`` through."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim == 3:
        return truth.mean(axis=0)
    if truth.ndim == 2:
        return truth
    raise ValueError(f"truth must be [M, Q] or [K, M, Q], got shape {truth.shape}")


def lds_per_query(scores: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """LDS for every query.

    Args:
        scores: ``[Q, N]`` attribution scores.
        mask: ``[M, N]`` boolean subset membership.
        truth: ``[M, Q]`` seed-averaged ground truth (``[K, M, Q]`` is
            averaged over seeds first).

    Returns:
        ``[Q]`` Spearman correlations; NaN where prediction or truth is
        constant over subsets.
    """
    truth = _mean_truth(truth)
    predictions = group_predictions(scores, mask)
    if predictions.shape != truth.shape:
        raise ValueError(f"group predictions have shape {predictions.shape} [M, Q] but truth has shape {truth.shape}")
    return spearman_per_query(predictions, truth)


def bootstrap_mean_ci(
    values: np.ndarray,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean over queries with a percentile bootstrap interval.

    NaN entries (queries without a defined LDS) are excluded and counted.
    Queries are resampled with replacement; the interval is given by the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the resampled
    means.

    Args:
        values: ``[Q]`` per-query values.
        n_resamples: number of bootstrap resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the numpy Generator, so the interval is reproducible.

    Returns:
        ``{"mean", "ci_low", "ci_high", "n", "n_excluded"}``; ``n`` counts the
        queries used. With no usable query, mean and interval are NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D [Q], got shape {values.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if np.isinf(values).any():
        raise ValueError("values contain infinities; only NaN marks an undefined query")

    kept = values[~np.isnan(values)]
    n, n_excluded = int(kept.size), int(values.size - kept.size)
    if n == 0:
        nan = float("nan")
        return {"mean": nan, "ci_low": nan, "ci_high": nan, "n": 0, "n_excluded": n_excluded}

    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # Resample in blocks to bound memory at about 8 MB of indices per block.
    block = max(1, 1_000_000 // n)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = kept[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {
        "mean": float(kept.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "n": n,
        "n_excluded": n_excluded,
    }
