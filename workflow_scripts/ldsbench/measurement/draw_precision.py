"""How many measurement draws the LDS needs: the Monte Carlo share of the
ground truth's spread between subsets.

The LDS correlates, per query, predictions with the ground truth across
subsets, so a measurement's Monte Carlo error matters only through the
spread it adds between subsets, not through its size. Setting, per query:
subsets j = 1..J, seeds k = 1..K, and each model's measurement the mean of
R replicates v_jkr (groups of ``strata`` x (2 if antithetic) draws,
independent and identically distributed). Common random numbers: replicate
r of every model uses the same draws. The ground truth of subset j at R
replicates is y_j = (1/R) sum_r a_jr with a_jr = (1/K) sum_k v_jkr.

Write a_jr = mu_j + c_r + e_jr: c_r, shared by every subset, shifts every
y_j alike and cannot change a rank; e_jr, independent across subsets and
replicates with variance sigma^2, is what the draws add between subsets.
With d_jr = a_jr - mean_j a_jr (c_r cancels), E var_r d_jr = sigma^2 (1 - 1/J),
and E var_j y_j = var_j mu_j + sigma^2 / R (sample variances, ddof 1). So,
per query:

- ``monte_carlo_variance`` sigma^2 = J / (J - 1) mean_j var_r d_jr, per
  replicate;
- ``between_variance`` V = var_j y_j - sigma^2 / R, the spread of the
  draw-free ground truth;
- ``share(R')`` = (sigma^2 / R') / (V + sigma^2 / R'), the Monte Carlo share
  of the ground truth's spread at R' replicates (1 where V <= 0: the pilot
  sees no spread beyond its own noise);
- ``replicates_needed(f)`` = ceil(sigma^2 (1 - f) / (f V)), the fewest
  replicates whose share is at most f (infinite where V <= 0).

A correlation with a ground truth that carries independent noise of share
s is attenuated by sqrt(1 - s) (Spearman's attenuation), so a share of f
lowers a query's LDS by about f / 2 of itself. Because the draws are common
to every model, sigma^2 is far below a single model's per-replicate
variance (R x its standard error squared), which is what a target on the
standard error alone would control.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def precision_per_query(replicates: np.ndarray) -> pd.DataFrame:
    """Per query, from replicate means ``[J, K, Q, R]`` (J >= 3 subsets, R >= 2
    complete replicates of every model): ``query``, ``monte_carlo_variance``
    (sigma^2, per replicate) and ``between_variance`` (V)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    if replicates.ndim != 4:
        raise ValueError(f"replicates must be [subsets, seeds, queries, replicates], got shape {replicates.shape}")
    n_subsets, _, n_queries, n_replicates = replicates.shape
    if n_subsets < 3 or n_replicates < 2:
        raise ValueError(f"need at least 3 subsets and 2 replicates, got {n_subsets} and {n_replicates}")
    if not np.isfinite(replicates).all():
        raise ValueError("replicate means must be finite (every model measured with the same draws)")
    seed_means = replicates.mean(axis=1)  # a_jqr [J, Q, R]
    deviations = seed_means - seed_means.mean(axis=0, keepdims=True)
    sigma2 = n_subsets / (n_subsets - 1) * deviations.var(axis=2, ddof=1).mean(axis=0)
    truth = seed_means.mean(axis=2)  # y_jq [J, Q]
    between = truth.var(axis=0, ddof=1) - sigma2 / n_replicates
    return pd.DataFrame({"query": np.arange(n_queries), "monte_carlo_variance": sigma2, "between_variance": between})


def share(monte_carlo_variance, between_variance, replicates: float) -> np.ndarray:
    """The Monte Carlo share of the ground truth's spread at ``replicates``
    replicates; 1 where the draw-free spread is not positive."""
    noise = np.asarray(monte_carlo_variance, dtype=np.float64) / replicates
    between = np.asarray(between_variance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(between > 0, noise / (between + noise), 1.0)


def replicates_needed(monte_carlo_variance, between_variance, target: float) -> np.ndarray:
    """Per query, the fewest replicates whose share is at most ``target``
    (float; infinite where the draw-free spread is not positive)."""
    if not 0 < target < 1:
        raise ValueError(f"target share must lie in (0, 1), got {target}")
    sigma2, between = np.asarray(monte_carlo_variance, dtype=np.float64), np.asarray(between_variance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(between > 0, np.ceil(sigma2 * (1 - target) / (target * between)), np.inf)
    return np.maximum(needed, 1.0)


def replicates_for_mean_share(per_query: pd.DataFrame, target: float, limit: int = 2**20) -> int | None:
    """The fewest replicates R' at which the share averaged over the queries
    with a positive draw-free spread is at most ``target``, or None if none
    up to ``limit``. The mean share bounds the LDS's attenuation: about
    ``target`` / 2 of itself."""
    if not 0 < target < 1:
        raise ValueError(f"target share must lie in (0, 1), got {target}")
    resolved = per_query[per_query["between_variance"] > 0]
    if resolved.empty:
        return None

    def mean_share(r):
        return float(share(resolved["monte_carlo_variance"], resolved["between_variance"], r).mean())

    if mean_share(limit) > target:
        return None
    low, high = 1, limit  # mean_share decreases in r: bisect for the first r at or below target
    while low < high:
        middle = (low + high) // 2
        if mean_share(middle) <= target:
            high = middle
        else:
            low = middle + 1
    return low


def recommendation(per_query: pd.DataFrame, replicate_size: int, configured_draws: int, target: float) -> dict:
    """One measurement's reading: its configured draws and their mean share
    over the resolved queries, the draws whose mean share is ``target``
    (whole replicates of ``replicate_size`` draws, at least two), and the
    queries the pilot cannot resolve."""
    resolved = per_query[per_query["between_variance"] > 0]
    configured = share(resolved["monte_carlo_variance"], resolved["between_variance"], configured_draws / replicate_size)
    replicates = replicates_for_mean_share(per_query, target)
    draws = None if replicates is None else max(2, replicates) * replicate_size
    return {
        "configured_draws": configured_draws,
        "mean_share": float(configured.mean()) if len(resolved) else math.nan,
        "target_share": target,
        "recommended_draws": draws,
        "draw_ratio": math.nan if draws is None else draws / configured_draws,
        "queries": len(per_query),
        "unresolved_queries": len(per_query) - len(resolved),
    }


def recommended_measurements(readings: pd.DataFrame, configured_draws: dict[str, int]) -> dict:
    """The config overlay that gives each measurement the pilot's recommended
    draws: ``{"measurements": {name: {"draws": draws}}}``, for every
    measurement of ``configured_draws`` in its order, with the configured
    draws where ``readings`` (``measurement``, ``recommended_draws``) has no
    recommendation (no draw count up to the limit reaches the target).
    Passed after the configuration (``--configfile config.yaml this.yaml``),
    Snakemake merges it key by key, so every other setting stays; naming
    every measurement in the configured order keeps that order (which
    decides, for one, the report's default measurement) whichever file
    Snakemake reads first."""
    recommended = readings.set_index("measurement")["recommended_draws"]
    draws = {name: int(recommended[name]) if pd.notna(recommended.get(name)) else int(configured) for name, configured in configured_draws.items()}
    return {"measurements": {name: {"draws": count} for name, count in draws.items()}}
