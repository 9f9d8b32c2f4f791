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

from .curvature import KroneckerEigenbasis
from .diffusion import output_key
from .gradients import iter_example_gradients
from .measurement import measurement_output_fn
from .model import module_mask
from .noise import stream_seed

SCORE_SIGN = -1.0


def query_gradients(unet, scheduler, queries, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, progress: bool = True) -> torch.Tensor:
    """[Q, P] gradients of each query's output function (usually the measurement's)
    for queries [Q, C, H, W]; a query's draws are keyed by its content."""
    stream = stream_seed(seed, "query_gradient", *output_key(output_fn))
    batches = iter_example_gradients(
        unet, scheduler, queries, output_fn, n_draws, stream, batch_examples, progress=progress, desc=f"query gradients ({output_key(output_fn)[0]})"
    )
    return torch.cat([g for _, g in batches])


def training_gradient_batches(unet, scheduler, train_images, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, progress: bool = True):
    """Stream of (rows, [B, P]) gradients of each training example's output function
    for train_images [N, C, H, W]; an example's draws are keyed by its content."""
    stream = stream_seed(seed, "train_gradient", *output_key(output_fn))
    return iter_example_gradients(
        unet, scheduler, train_images, output_fn, n_draws, stream, batch_examples, progress=progress, desc=f"training gradients ({output_key(output_fn)[0]})"
    )


def influence_scores(unet, scheduler, train_images, queries, basis, dampings, *, measurement, train_draws: int, query_draws: int, seed: int, modules: str | None = None) -> np.ndarray:
    """K-FAC/EK-FAC influence for every damping in one pass: [L, Q, N] float32.

    ``basis`` is a ``curvature.KroneckerEigenbasis`` of the training loss's GGN.
    Query gradients are preconditioned once per damping; training gradients
    are streamed and never stored. ``modules`` (a regular expression of
    module names, ``model.module_mask``) restricts the attribution to those
    layers' weights: K-FAC is block-diagonal over modules, so this is exactly
    the influence of those weights alone, from the same factors.
    """
    output_fn = measurement_output_fn(measurement)
    preconditioned = basis.precondition(query_gradients(unet, scheduler, queries, output_fn, query_draws, seed), dampings)
    if modules is not None:
        preconditioned = preconditioned * module_mask(unet, modules).to(preconditioned.device)
    n_train = len(train_images)
    scores = np.zeros((len(dampings), len(queries), n_train), dtype=np.float64)
    for rows, grads in training_gradient_batches(unet, scheduler, train_images, "loss", train_draws, seed):
        block = torch.einsum("lqp,bp->lqb", preconditioned, grads.double())
        scores[:, :, rows] = block.cpu().numpy()
    return (SCORE_SIGN * scores / n_train).astype(np.float32)


def random_scores(n_queries: int, n_train: int, seed: int) -> np.ndarray:
    """Independent standard normal scores, a baseline whose LDS is 0 in expectation: [1, Q, N]."""
    return np.random.default_rng(seed).standard_normal((1, n_queries, n_train)).astype(np.float32)


def score_influence(job) -> tuple[list[float], np.ndarray]:
    """Scorer of ``type: influence`` (``method_types``): the default damping and its grid."""
    method = job.method
    dampings = list(dict.fromkeys([method["damping"], *method["damping_grid"]]))
    basis = KroneckerEigenbasis.load(job.inputs["curvature"])
    scores = influence_scores(
        job.unet, job.scheduler, job.train, job.queries, basis, dampings,
        measurement=job.measurement, train_draws=method["train_draws"], query_draws=method["query_draws"], seed=method["seed"],
        modules=method["modules"],
    )
    return dampings, scores


def score_random(job) -> tuple[list[float], np.ndarray]:
    """Scorer of ``type: random``."""
    return [float("nan")], random_scores(len(job.queries), len(job.train), job.method["seed"])
