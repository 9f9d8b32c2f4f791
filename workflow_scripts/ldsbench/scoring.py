"""Attribution scores tau(q, i) for every (query, training example) pair.

Orientation (the same for every method): tau(q, i) is the predicted change of
the measurement m(q) caused by including training example i, i.e.
m(with i) - m(without i). Positive means including i raises m(q).

With the training objective L = (1/N) sum_i loss_i, removing example i moves
the optimum by about (1/N) H^{-1} grad loss_i, so to first order

    tau(q, i) = -(1/N) grad m(q)^T (H + lambda I)^{-1} grad loss_i.

Influence methods use K-FAC/EK-FAC for H (the GGN of L); TRAK methods use
the projected-gradient Gram matrix Phi^T Phi, which already sums over the N
examples, so its 1/N is implicit. ``SCORE_SIGN`` is the one place the minus
sign lives.

``measurement`` is a type name or a config entry (``measurement.
measurement_settings``); grad m(q) is the gradient of the measurement's
per-draw output function (``measurement.measurement_output_fn``): the same
Monte Carlo estimator as the measurement, or for ``log_likelihood`` its ELBO
surrogate. A measurement's orientation plays no part here: tau always
predicts m(with i) - m(without i) of m as measured.
"""

from __future__ import annotations

import numpy as np
import torch

from .diffusion import output_key
from .gradients import iter_example_gradients
from .noise import stream_seed

SCORE_SIGN = -1.0


def query_gradient_batches(unet, scheduler, queries, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, draws_per_pass: int = 64, progress: bool = True):
    """Stream of (rows, [B, P]) gradients of each query's output function
    (usually the measurement's) for queries [Q, C, H, W]; a query's draws are
    keyed by its content, so any subset of the queries gets the same gradients."""
    stream = stream_seed(seed, "query_gradient", *output_key(output_fn))
    return iter_example_gradients(
        unet, scheduler, queries, output_fn, n_draws, stream, batch_examples, draws_per_pass, progress=progress, desc=f"query gradients ({output_key(output_fn)[0]})"
    )


def query_gradients(unet, scheduler, queries, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, progress: bool = True) -> torch.Tensor:
    """[Q, P] query gradients at once (``query_gradient_batches``): for small
    models and tests; scorers stream the batches instead."""
    return torch.cat([g for _, g in query_gradient_batches(unet, scheduler, queries, output_fn, n_draws, seed, batch_examples, progress=progress)])


def training_gradient_batches(unet, scheduler, train_images, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, draws_per_pass: int = 64, progress: bool = True):
    """Stream of (rows, [B, P]) gradients of each training example's output function
    for train_images [N, C, H, W]; an example's draws are keyed by its content."""
    stream = stream_seed(seed, "train_gradient", *output_key(output_fn))
    return iter_example_gradients(
        unet, scheduler, train_images, output_fn, n_draws, stream, batch_examples, draws_per_pass, progress=progress, desc=f"training gradients ({output_key(output_fn)[0]})"
    )


def random_scores(n_queries: int, n_train: int, seed: int) -> np.ndarray:
    """Independent standard normal scores, a baseline whose LDS is 0 in expectation: [1, Q, N]."""
    return np.random.default_rng(seed).standard_normal((1, n_queries, n_train)).astype(np.float32)


def score_random(job) -> tuple[list[float], np.ndarray]:
    """Scorer of ``type: random``."""
    return [float("nan")], random_scores(len(job.queries), len(job.train), job.method["seed"])
