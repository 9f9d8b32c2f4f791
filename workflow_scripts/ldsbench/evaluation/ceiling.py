"""The retraining ceiling: the LDS that the ground truth itself reaches, from
how well models retrained on the same subsets with other seeds agree. No
attribution method can be expected to exceed it (docs/definitions.md)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from ldsbench.evaluation.lds import centred_ranks, spearman_from_ranks


def seed_agreement_per_query(truth_per_seed: np.ndarray) -> np.ndarray:
    """How well one retraining seed's ground truth ranks the subsets like another's.

    For each query, the mean over seed pairs k < k' of the Spearman
    correlation over subsets of y_{j,k}(q) and y_{j,k'}(q). A NaN for any pair
    (a seed constant over subsets) makes the query NaN.

    Args:
        truth_per_seed: ``[K, M, Q]`` with K >= 2.

    Returns:
        ``[Q]`` float64 array.
    """
    truth_per_seed = np.asarray(truth_per_seed, dtype=np.float64)
    if truth_per_seed.ndim != 3:
        raise ValueError(f"truth_per_seed must be [K, M, Q], got shape {truth_per_seed.shape}")
    n_seeds = truth_per_seed.shape[0]
    if n_seeds < 2:
        raise ValueError(f"the retraining ceiling needs K >= 2 seeds, got K={n_seeds}")
    ranks = [centred_ranks(seed) for seed in truth_per_seed]
    pairs = [spearman_from_ranks(ranks[a], ranks[b]) for a in range(n_seeds) for b in range(a + 1, n_seeds)]
    return np.mean(pairs, axis=0)


def expected_spearman(pearson: float, n_subsets: int) -> float:
    """Expected Spearman correlation of M bivariate-normal pairs with Pearson
    correlation rho (Moran 1948):
    E[r_s] = 6 / (pi (M + 1)) (arcsin rho + (M - 2) arcsin(rho / 2)).
    At large M it tends to (6 / pi) arcsin(rho / 2); at M = 16 it is about
    0.02 lower, the bias every LDS over M subsets shares."""
    return float(6.0 / (np.pi * (n_subsets + 1)) * (np.arcsin(pearson) + (n_subsets - 2) * np.arcsin(pearson / 2.0)))


def retraining_ceiling(seed_agreement: np.ndarray, n_seeds: int, n_subsets: int, weights: np.ndarray | None = None) -> float:
    """Best LDS any predictor can expect against the K-seed mean ground truth.

    Model: y_{j,k}(q) = mu_j(q) + e_{j,k}(q), seed noise e independent of the
    subset effect mu, both normal. A perfect predictor knows mu; its LDS is
    the Spearman correlation over the M subsets of mu with the K-seed mean.
    With r the Pearson correlation of two single seeds, the K-seed mean has
    reliability R = K r / (1 + (K - 1) r) (Spearman-Brown) and
    corr(mu, mean) = sqrt(R). Spearman and Pearson are related by
    :func:`expected_spearman` at the same M: r is the Pearson value whose
    expected Spearman is the pooled agreement, and the ceiling is the
    expected Spearman of sqrt(R).

    ``seed_agreement`` (:func:`seed_agreement_per_query`) is pooled over
    queries (NaN left out) **before** the transform: per-query agreements over
    a few subsets are noisy and the transform is nonlinear, so transforming
    each query and averaging would be biased. A pooled agreement <= 0 (no
    reproducible subset effect) gives 0.

    Args:
        seed_agreement: ``[Q]`` mean pairwise Spearman between single seeds.
        n_seeds: K, the number of seeds the ground truth averages.
        n_subsets: M, the number of subsets the Spearman correlations run over.
        weights: ``[Q]`` weights of the queries in the pooled mean (a
            bootstrap's multiplicities); None weighs them equally.

    Returns:
        The ceiling in [0, 1]; NaN if no query has a defined agreement.
    """
    seed_agreement = np.asarray(seed_agreement, dtype=np.float64)
    if n_seeds < 2:
        raise ValueError(f"the retraining ceiling needs K >= 2 seeds, got K={n_seeds}")
    weights = np.ones(seed_agreement.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(seed_agreement) & (weights > 0)
    if not keep.any():
        return float("nan")
    pooled = float(np.average(seed_agreement[keep], weights=weights[keep]))
    if pooled <= 0:
        return 0.0
    if pooled >= 1:
        return 1.0
    # expected_spearman is increasing in rho, from 0 at 0 to 1 at 1.
    r = brentq(lambda rho: expected_spearman(rho, n_subsets) - pooled, 0.0, 1.0, xtol=1e-12)
    reliability = n_seeds * r / (1.0 + (n_seeds - 1) * r)
    return expected_spearman(np.sqrt(reliability), n_subsets)
