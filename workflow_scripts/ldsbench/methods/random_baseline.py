"""The random baseline (``type: random``): independent standard normal
scores, whose LDS is 0 in expectation. It tells how far from chance a
method's LDS is on this benchmark's number of subsets and queries."""

from __future__ import annotations

import numpy as np

from ldsbench.spec.measurement_types import same_for_every_measurement


def random_scores(n_queries: int, n_train: int, seed: int) -> np.ndarray:
    """Independent standard normal scores: [1, Q, N] float32."""
    return np.random.default_rng(seed).standard_normal((1, n_queries, n_train)).astype(np.float32)


def score_random(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: random``: the same scores for every measurement."""
    return [float("nan")], same_for_every_measurement(job, random_scores(len(job.queries), len(job.train), job.method["seed"]))
