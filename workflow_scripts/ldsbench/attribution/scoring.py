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

A scoring job scores one method for every measurement at once: scorers
return ``{measurement name: [L, Q, N]}``. Measurements whose query-side
output function is the same share one set of query gradients
(``measurement_types.query_output_groups``), and every training-side
quantity is computed once for all of them; a method whose scores do not
depend on the measurement computes them once
(``measurement_types.same_for_every_measurement``).

``measurement`` is a type name or a config entry (``measurement.
measurement_settings``); grad m(q) is the gradient of the measurement's
per-draw output function (``measurement.measurement_output_fn``): the same
Monte Carlo estimator as the measurement, or for ``log_likelihood`` its ELBO
surrogate. A measurement's orientation plays no part here: tau always
predicts m(with i) - m(without i) of m as measured.
"""

from __future__ import annotations

import torch

from ldsbench.attribution.gradients import iter_example_gradients
from ldsbench.diffusion.noise import as_gradient_draws
from ldsbench.diffusion.outputs import output_key

SCORE_SIGN = -1.0


def query_gradient_batches(
    unet, scheduler, queries, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, draws_per_pass: int = 64, progress: bool = True
):
    """Stream of (rows, [B, P]) gradients of each query's output function
    (usually the measurement's) for queries [Q, C, H, W]; a query's draws are
    keyed by its content (or common to every example and query), so any
    subset of the queries gets the same gradients."""
    stream = as_gradient_draws(n_draws).stream(seed, "query_gradient", *output_key(output_fn))
    return iter_example_gradients(
        unet,
        scheduler,
        queries,
        output_fn,
        n_draws,
        stream,
        batch_examples,
        draws_per_pass,
        progress=progress,
        desc=f"query gradients ({output_key(output_fn)[0]})",
    )


def query_gradients(unet, scheduler, queries, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, progress: bool = True) -> torch.Tensor:
    """[Q, P] query gradients at once (``query_gradient_batches``): for small
    models and tests; scorers stream the batches instead."""
    return torch.cat([g for _, g in query_gradient_batches(unet, scheduler, queries, output_fn, n_draws, seed, batch_examples, progress=progress)])


def training_gradient_batches(
    unet, scheduler, train_images, output_fn, n_draws: int, seed: int, batch_examples: int = 32, *, draws_per_pass: int = 64, progress: bool = True
):
    """Stream of (rows, [B, P]) gradients of each training example's output function
    for train_images [N, C, H, W]; an example's draws are keyed by its content."""
    stream = as_gradient_draws(n_draws).stream(seed, "train_gradient", *output_key(output_fn))
    return iter_example_gradients(
        unet,
        scheduler,
        train_images,
        output_fn,
        n_draws,
        stream,
        batch_examples,
        draws_per_pass,
        progress=progress,
        desc=f"training gradients ({output_key(output_fn)[0]})",
    )


def stacked_query_gradient_batches(
    unet, scheduler, queries, output_fns: list, rows: range, n_draws: int, seed: int, batch_examples: int = 32, *, draws_per_pass: int = 64
):
    """``query_gradient_batches`` over rows ``rows`` of the stacked queries
    (row s Q + q: query q under ``output_fns[s]``): yields (slice relative
    to ``rows.start``, [B, P]). A gradient is the same whichever rows are
    asked for (draws are keyed by the query's content and the output function)."""
    n_queries = len(queries)
    for s, output_fn in enumerate(output_fns):
        first, stop = max(rows.start, s * n_queries), min(rows.stop, (s + 1) * n_queries)
        if first >= stop:
            continue
        part = queries[first - s * n_queries : stop - s * n_queries]
        for block, grads in query_gradient_batches(unet, scheduler, part, output_fn, n_draws, seed, batch_examples, draws_per_pass=draws_per_pass):
            offset = first - rows.start
            yield slice(offset + block.start, offset + block.stop), grads
