"""Attribution by unlearning (Wang et al. 2024, "Data Attribution for
Text-to-Image Models by Unlearning Synthesized Images"), for every measurement.

A diagonal Fisher is computed once on the training data,

    F = (1 / (N D_F)) sum_i sum_d (grad loss(x_i, t_d, eps_d))^2,

the mean of squared single-draw gradients of the training loss
(``diagonal_fisher``). Each query q is unlearned by ``steps`` steps of
Fisher-preconditioned gradient ascent on its measurement's per-draw output
function m (its mean over the query draws):

    theta_{k+1} = theta_k + s eta (F + lam)^{-1} grad m(q; theta_k),  eta = lr / N,

(``unlearned_parameters``; lr the authors' ``unlearn_lr``, divided by N as
their code does), with s = -1 for a higher-is-better measurement (elbo,
log_likelihood: unlearning lowers it) and s = +1 otherwise (the losses:
unlearning raises them; squared_norm, not a quality measure, is raised).
Entries with F + lam = 0 take no step. Only the attributed weights move
(``modules`` of them). The change of each training example's loss, at draws
fixed for the example (the same before and after, ``training_losses``),

    Delta_i = L_i(theta_K) - L_i(theta_0),

is the authors' influence. To first order in eta, one step gives
Delta_i = s eta g_i^T (F + lam)^{-1} g_q (g_i = grad L_i, g_q = grad m(q)),
and influence with the curvature C is tau = SCORE_SIGN (1/N) g_q^T C^{-1}
g_i (``attribution.scoring``), so the score

    tau(q, i) = SCORE_SIGN s Delta_i / (K lr)        (K = steps)

is influence with the damped diagonal Fisher in place of the Hessian in the
small-step limit: in the package's orientation (it predicts m(with i) -
m(without i)) and with the sign of ``type: influence``. A training example
whose loss rises when the query is unlearned helped the query: for a loss,
tau < 0.

The damping lam is the tuned hyperparameter: every damping is its own
unlearning of every query. The reference losses L_i(theta_0) are computed
once and shared by every query, damping and measurement. The model's
weights are restored after each query and its dtype after scoring.

Precision: the scoring runs in ``dtype`` (float64 by default): a step of
eta = lr / N on float32 weights would be partly lost to their rounding, and
the loss differences Delta_i to that of the forward passes.

Draws (``noise.GradientDraws``, each keyed by the image's content, so
scores follow the examples): the Fisher's ``fisher_draws`` and the query's
``query_draws`` in the method's ``gradient_draws`` layout (the query
stream is that of the other gradient methods, ``scoring.query_gradient_batches``);
the training losses at ``eval_draws`` evenly spaced timesteps with one
noise each, as the authors' ``collect_loss``.

Peak memory is ``memory.unlearning_bytes``: the model in ``dtype`` and one
backward pass, the Fisher and one copy of the original attributed weights
and one query gradient (P values each), the scores, and one batch of
forward draws.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch
from tqdm import tqdm

from ldsbench.attribution.gradients import example_gradient
from ldsbench.attribution.scoring import SCORE_SIGN
from ldsbench.diffusion.model import attributed_parameters, module_mask
from ldsbench.diffusion.noise import GradientDraws, content_key
from ldsbench.diffusion.outputs import output_key, per_draw_output
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.planning.footprint import footprint_of
from ldsbench.planning.memory import choose_unlearning_batch, method_sizes
from ldsbench.spec.measurement_types import HIGHER_IS_BETTER, orientation_of, query_output_groups, split_by_group
from ldsbench.spec.method_types import scored_values

log = logging.getLogger(__name__)

#: Draws per forward pass of the training losses, at most.
EVAL_BATCH_DRAWS = 256


def flat_weights(unet) -> torch.Tensor:
    """The attributed weights, concatenated: [P] (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in attributed_parameters(unet)]).clone()


@torch.no_grad()
def set_flat_weights(unet, flat: torch.Tensor) -> None:
    """Write the flat attributed weights ``flat`` [P] into the model."""
    start = 0
    for p in attributed_parameters(unet):
        p.copy_(flat[start : start + p.numel()].view_as(p))
        start += p.numel()


def diagonal_fisher(unet, scheduler, images: torch.Tensor, draws: GradientDraws, seed: int, *, progress: bool = False) -> torch.Tensor:
    """The diagonal empirical Fisher of the training loss: [P] float64, the
    mean over examples and draws of the squared single-draw gradient of the
    per-draw loss (``outputs.simplified_loss``), as the authors'
    ``estimate_fisher``. N ``draws.count`` backward passes of one draw."""
    unet.eval()
    params = attributed_parameters(unet)
    stream = draws.stream(seed, "unlearning_fisher", "loss")
    shape, num_timesteps = tuple(images.shape[1:]), scheduler.config.num_train_timesteps
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64, device=images.device)
    for image in tqdm(images, desc="unlearning: Fisher", unit="example", file=sys.stderr, mininterval=30, disable=not progress):
        timesteps, noise = draws.draws(stream, content_key(image), 0, draws.count, shape, num_timesteps)
        noise, timesteps = noise.to(image.device, image.dtype), timesteps.to(image.device)
        for d in range(draws.count):
            value = per_draw_output(unet, scheduler, image[None], noise[d : d + 1], timesteps[d : d + 1], "loss").sum()
            total += torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)]).double().square()
    return total / (len(images) * draws.count)


def preconditioner(fisher: torch.Tensor, damping: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(F + lam)^{-1} elementwise [P], 0 where F + lam = 0 and outside ``mask``."""
    shifted = fisher + damping
    inverse = torch.where(shifted > 0, 1.0 / torch.where(shifted > 0, shifted, torch.ones_like(shifted)), torch.zeros_like(shifted))
    return inverse if mask is None else inverse * mask.to(inverse.device)


def query_stream(draws: GradientDraws, seed: int, output_fn) -> int:
    """The stream of a query gradient's draws: that of every gradient method
    (``scoring.query_gradient_batches``)."""
    return draws.stream(seed, "query_gradient", *output_key(output_fn))


def unlearned_parameters(
    unet,
    scheduler,
    query: torch.Tensor,
    output_fn,
    inverse: torch.Tensor,
    *,
    step: float,
    steps: int,
    direction: float,
    draws: GradientDraws,
    seed: int,
    draws_per_pass: int = 64,
    first_gradient: torch.Tensor | None = None,
) -> torch.Tensor:
    """The attributed weights [P] after unlearning ``query`` [C, H, W]:
    ``steps`` steps theta += direction step inverse * grad m(q; theta), m the
    mean of ``output_fn`` over the query's draws. Leaves the model at the
    unlearned weights (the caller restores them). ``first_gradient``: the
    gradient at the current weights, if already computed."""
    stream = query_stream(draws, seed, output_fn)
    theta = flat_weights(unet)
    for k in range(steps):
        if k == 0 and first_gradient is not None:
            gradient = first_gradient
        else:
            gradient = example_gradient(unet, scheduler, query, content_key(query), output_fn, draws, stream, draws_per_pass)
        theta = theta + (direction * step) * (inverse * gradient.to(inverse.dtype)).to(theta.dtype)
        set_flat_weights(unet, theta)
    return theta


@torch.no_grad()
def training_losses(
    unet, scheduler, images: torch.Tensor, draws: GradientDraws, seed: int, *, batch_draws: int = EVAL_BATCH_DRAWS, keys: list[int] | None = None
) -> torch.Tensor:
    """L_i: each image's per-draw loss averaged over its fixed draws
    (keyed by its content): [N] float64. Forward passes of at most
    ``batch_draws`` draws (whole examples, at least one)."""
    unet.eval()
    stream = draws.stream(seed, "unlearning_eval", "loss")
    keys = [content_key(image) for image in images] if keys is None else keys
    shape, num_timesteps = tuple(images.shape[1:]), scheduler.config.num_train_timesteps
    per_batch = max(1, batch_draws // draws.count)
    out = torch.empty(len(images), dtype=torch.float64)
    for first in range(0, len(images), per_batch):
        rows = range(first, min(first + per_batch, len(images)))
        parts = [draws.draws(stream, keys[i], 0, draws.count, shape, num_timesteps) for i in rows]
        timesteps = torch.cat([t for t, _ in parts]).to(images.device)
        noise = torch.cat([n for _, n in parts]).to(images.device, images.dtype)
        x0 = images[rows.start : rows.stop].repeat_interleave(draws.count, dim=0)
        values = per_draw_output(unet, scheduler, x0, noise, timesteps, "loss")
        out[rows.start : rows.stop] = values.view(len(rows), draws.count).double().mean(dim=1).cpu()
    return out


def unlearning_direction(measurement: dict) -> float:
    """s: -1 where unlearning lowers the measurement (higher is better), +1 otherwise."""
    return -1.0 if orientation_of(measurement) == HIGHER_IS_BETTER else 1.0


def unlearning_scores(
    unet,
    scheduler,
    train_images: torch.Tensor,
    queries: torch.Tensor,
    dampings,
    *,
    measurements: list[dict],
    lr: float,
    steps: int,
    fisher_draws: GradientDraws,
    query_draws: GradientDraws,
    eval_draws: GradientDraws,
    seed: int,
    modules: str | None = None,
    draws_per_pass: int = 64,
    batch_draws: int = EVAL_BATCH_DRAWS,
    fisher: torch.Tensor | None = None,
) -> np.ndarray:
    """tau [L, S Q, N] float32 (row s Q + q: query q under ``measurements[s]``,
    each a measurement's gradient settings) for every damping. The model's
    attributed weights are restored after each query; ``fisher`` [P]: a
    Fisher already computed (else ``diagonal_fisher``)."""
    dampings = [float(d) for d in dampings]
    n_train = len(train_images)
    step = lr / n_train
    if fisher is None:
        fisher = diagonal_fisher(unet, scheduler, train_images, fisher_draws, seed, progress=True)
    mask = None if modules is None else module_mask(unet, modules).to(fisher.device)
    inverses = [preconditioner(fisher, damping, mask) for damping in dampings]
    keys = [content_key(image) for image in train_images]
    reference = training_losses(unet, scheduler, train_images, eval_draws, seed, batch_draws=batch_draws, keys=keys)
    original = flat_weights(unet)
    scores = np.zeros((len(dampings), len(measurements) * len(queries), n_train), dtype=np.float64)
    bar = tqdm(total=len(measurements) * len(queries), desc="unlearning: queries", unit="query", file=sys.stderr, mininterval=30)
    try:
        for s, measurement in enumerate(measurements):
            output_fn, direction = measurement_output_fn(measurement), unlearning_direction(measurement)
            for q, query in enumerate(queries):
                first = example_gradient(
                    unet, scheduler, query, content_key(query), output_fn, query_draws, query_stream(query_draws, seed, output_fn), draws_per_pass
                )
                for index, inverse in enumerate(inverses):
                    unlearned_parameters(
                        unet,
                        scheduler,
                        query,
                        output_fn,
                        inverse,
                        step=step,
                        steps=steps,
                        direction=direction,
                        draws=query_draws,
                        seed=seed,
                        draws_per_pass=draws_per_pass,
                        first_gradient=first,
                    )
                    after = training_losses(unet, scheduler, train_images, eval_draws, seed, batch_draws=batch_draws, keys=keys)
                    set_flat_weights(unet, original)
                    scores[index, s * len(queries) + q] = (SCORE_SIGN * direction / (steps * lr)) * (after - reference).numpy()
                del first
                bar.update(1)
    finally:
        set_flat_weights(unet, original)
        bar.close()
    return scores.astype(np.float32)


def score_unlearning(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: unlearning`` (``methods``): the default damping and
    its grid, for every measurement; one Fisher and one set of reference
    losses for all of them."""
    method = job.method
    dampings = scored_values(method)
    groups = query_output_groups(job.measurements)
    unet = job.unet
    dtype = getattr(torch, method["dtype"])
    original_dtype = next(unet.parameters()).dtype
    fisher_draws = GradientDraws.of(method["fisher_draws"], method.get("gradient_draws"))
    query_draws = GradientDraws.of(method["query_draws"], method.get("gradient_draws"))
    eval_draws = GradientDraws(method["eval_draws"], timesteps="evenly_spaced")
    batch_draws = EVAL_BATCH_DRAWS
    if job.budget_bytes is not None:
        sizes = method_sizes(footprint_of(unet), "unlearning", min(job.draws_per_pass, max(fisher_draws.count, query_draws.count)))
        batch_draws = choose_unlearning_batch(
            job.budget_bytes,
            batch_draws=max(EVAL_BATCH_DRAWS, eval_draws.count),
            setting=job.budget_setting,
            queries=len(groups) * len(job.queries),
            train=len(job.train),
            values=len(dampings),
            value_bytes=torch.finfo(dtype).bits // 8,
            **sizes,
        )
        log.info("unlearning: %d draws per forward pass of the training losses", batch_draws)
    # torch's own ``to``: the model's dtype, without diffusers' warning about float32 modules.
    torch.nn.Module.to(unet, dtype)
    try:
        scores = unlearning_scores(
            unet,
            job.scheduler,
            job.train.to(dtype),
            job.queries.to(dtype),
            dampings,
            measurements=[settings for settings, _ in groups],
            lr=method["lr"],
            steps=method["steps"],
            fisher_draws=fisher_draws,
            query_draws=query_draws,
            eval_draws=eval_draws,
            seed=method["seed"],
            modules=method["modules"],
            draws_per_pass=job.draws_per_pass,
            batch_draws=batch_draws,
        )
    finally:
        torch.nn.Module.to(unet, original_dtype)
    return dampings, split_by_group(scores, groups)
