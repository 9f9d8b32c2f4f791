"""Journey-TRAK (Georgiev et al. 2023, "The Journey, Not the Destination: How
Data Guides Diffusion Models"): TRAK attribution of the steps of a query's
sampling trajectory.

Step t of a trajectory turns x_t into x_{t-1}. Journey-TRAK attributes it
through the simplified loss at timestep t, evaluated at the sampler's own
prediction of the clean image,

    f_t(theta) = E_eps || eps_theta(sqrt(abar_t) x0_hat_t + sqrt(1 - abar_t) eps, t) - eps ||^2 / D,

with x0_hat_t = x0_hat(x_t, t) computed once with the full model and held
fixed. Step t's score is the TRAK kernel score of grad f_t against the
training examples' projected loss gradients (exactly as ``type: trak`` with
``output_fn: loss``). A benchmark needs one score per (query, example): the
mean over the S selected steps. The kernel score is linear in the query
feature, so that mean is the kernel score of the mean of the S per-step
gradients, which is what is computed.

Trajectories. A generated query's trajectory is its own, regenerated from
its sampling noise (``sampling.ddpm_predicted_x0``). A held-out query was
never sampled; for it the benchmark takes the forward process instead:
x_t = sqrt(abar_t) q + sqrt(1 - abar_t) eps with eps keyed by the query's
content and the step, and x0_hat_t the full model's (clipped) prediction
from that x_t. The measurement plays no part: every measurement gets the
same Journey-TRAK scores, as the method attributes the trajectory, not a
measurement of the final image.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ldsbench.attribution.projected_features import job_training_features, projected_training_features
from ldsbench.attribution.scoring import SCORE_SIGN
from ldsbench.diffusion.model import attributed_parameters
from ldsbench.diffusion.noise import GradientDraws, content_key, noise_draws
from ldsbench.diffusion.outputs import noised, per_draw_output
from ldsbench.diffusion.precision import network_forward
from ldsbench.diffusion.sampling import ddpm_predicted_x0
from ldsbench.methods.trak import projection_batch, trak_kernel_scores
from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.feature_keys import projected_feature_sets
from ldsbench.spec.measurement_types import same_for_every_measurement
from ldsbench.spec.method_types import scored_values


def journey_timesteps(scheduler, num_inference_steps: int, steps: int) -> list[int]:
    """``steps`` timesteps of the ``num_inference_steps``-step sampler, evenly
    spaced over its trajectory from the first (noisiest) to the last (t = 0)."""
    if not 1 <= steps <= num_inference_steps:
        raise ValueError(f"steps must be in 1..{num_inference_steps} (the sampler's steps), got {steps}")
    sampler = copy.deepcopy(scheduler)
    sampler.set_timesteps(num_inference_steps)
    positions = np.unique(np.round(np.linspace(0, num_inference_steps - 1, steps)).astype(int))
    return [int(sampler.timesteps[p]) for p in positions]


@torch.no_grad()
def forward_predicted_x0(unet, scheduler, images: torch.Tensor, timesteps: list[int], seed: int) -> torch.Tensor:
    """x0_hat(x_t, t) on the forward process of ``images`` [Q, C, H, W]:
    [Q, S, C, H, W], clipped to [-1, 1] when the scheduler clips samples."""
    unet.eval()
    stream = stream_seed(seed, "journey_forward")
    shape, num_timesteps = tuple(images.shape[1:]), scheduler.config.num_train_timesteps
    abar = scheduler.alphas_cumprod.to(images.device, torch.float64)
    out = []
    for image in images:
        _, eps = noise_draws(stream, content_key(image), 0, len(timesteps), shape, num_timesteps)
        eps = eps.to(image.device, image.dtype)
        t = torch.tensor(timesteps, device=image.device)
        x_t = noised(scheduler, image.expand(len(timesteps), *shape), eps, t)
        a = abar[t].to(image.dtype).view(-1, *[1] * len(shape))
        x0_hat = (x_t - (1 - a).sqrt() * network_forward(unet, x_t, t)) / a.sqrt()
        out.append(x0_hat.clamp(-1, 1) if scheduler.config.clip_sample else x0_hat)
    return torch.stack(out)


def trajectory_predicted_x0(unet, scheduler, queries: torch.Tensor, kinds, sampling: dict, timesteps: list[int], seed: int) -> torch.Tensor:
    """[Q, S, C, H, W] x0_hat along each query's trajectory: generated queries
    (rows 0..G-1, sample r of the query sampler) their sampling trajectory,
    held-out queries the forward process."""
    kinds = np.asarray(kinds)
    out = torch.empty((len(queries), len(timesteps), *queries.shape[1:]), dtype=queries.dtype)
    generated = np.flatnonzero(kinds == "generated")
    if len(generated):
        out[generated] = ddpm_predicted_x0(unet, scheduler, generated, timesteps, sampling["generated"], sampling["sampling_steps"], sampling["seed"]).to(
            out.dtype
        )
    heldout = np.flatnonzero(kinds != "generated")
    if len(heldout):
        out[heldout] = forward_predicted_x0(unet, scheduler, queries[heldout], timesteps, seed).cpu()
    return out.to(queries.device)


def journey_query_gradients(
    unet, scheduler, x0_hats: torch.Tensor, timesteps: list[int], draws_per_step: int, seed: int, projector=None, batch_queries: int = 32
) -> torch.Tensor:
    """[Q, P] (or [Q, k] projected by ``projector`` in batches of
    ``batch_queries``, so that no [Q, P] matrix is held): per query, the gradient of (1/S) sum_t f_t
    with ``draws_per_step`` noise draws per step, from x0_hats [Q, S, C, H, W].
    A query's draws are keyed by the content of its x0_hat, so they do not
    depend on its row."""
    unet.eval()
    params = attributed_parameters(unet)
    stream = stream_seed(seed, "journey_query")
    steps, shape = len(timesteps), tuple(x0_hats.shape[2:])
    t = torch.tensor(timesteps, device=x0_hats.device).repeat_interleave(draws_per_step)
    rows, pending = [], []
    for index, x0_hat in enumerate(x0_hats):
        _, eps = noise_draws(stream, content_key(x0_hat), 0, steps * draws_per_step, shape, scheduler.config.num_train_timesteps)
        x0 = x0_hat.repeat_interleave(draws_per_step, dim=0)
        value = per_draw_output(unet, scheduler, x0, eps.to(x0.device, x0.dtype), t, "loss").sum() / (steps * draws_per_step)
        pending.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)]))
        if len(pending) == batch_queries or index == len(x0_hats) - 1:
            grads = torch.stack(pending)
            rows.append(grads if projector is None else projector.project(grads))
            pending = []
    return torch.cat(rows)


def journey_trak_scores(
    unet,
    scheduler,
    train_images,
    queries,
    kinds,
    lambdas,
    *,
    sampling: dict,
    steps: int,
    draws_per_step: int,
    projection_dim,
    projection_seed: int,
    train_draws: int | GradientDraws,
    seed: int,
    batch_examples: int = 256,
    draws_per_pass: int = 64,
    projection: str = "rademacher",
    lambda_scale: str = "absolute",
) -> np.ndarray:
    """Journey-TRAK scores for every lambda: [L, Q, N] float32.

    train_images [N, C, H, W]; queries [Q, C, H, W] with ``kinds`` ("generated"
    or "heldout") per query; ``sampling`` the query sampler's settings
    (``queries`` config: generated, sampling_steps, seed).
    """
    train_features, projector = projected_training_features(
        unet, scheduler, train_images, "loss", train_draws, seed, projection_dim, projection_seed, batch_examples, draws_per_pass, projection
    )
    return journey_scores_from_features(
        unet,
        scheduler,
        train_features,
        projector,
        queries,
        kinds,
        lambdas,
        sampling=sampling,
        steps=steps,
        draws_per_step=draws_per_step,
        seed=seed,
        lambda_scale=lambda_scale,
    )


def journey_scores_from_features(
    unet, scheduler, train_features, projector, queries, kinds, lambdas, *, sampling: dict, steps: int, draws_per_step: int, seed: int, lambda_scale: str
) -> np.ndarray:
    """[L, Q, N] float32 Journey-TRAK scores from the projected training loss
    gradients [N, k] and their projector (``projected_features``)."""
    timesteps = journey_timesteps(scheduler, sampling["sampling_steps"], steps)
    x0_hats = trajectory_predicted_x0(unet, scheduler, queries, kinds, sampling, timesteps, seed)
    query_features = journey_query_gradients(unet, scheduler, x0_hats, timesteps, draws_per_step, seed, projector)
    raw = trak_kernel_scores(query_features, train_features, lambdas, lambda_scale=lambda_scale)
    return (SCORE_SIGN * raw.cpu().numpy()).astype(np.float32)


def score_journey_trak(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: journey_trak`` (``methods``): the same scores
    for every measurement (the module docstring), from the full model's
    projected loss gradients (``projected_features.job_training_features``)."""
    method = job.method
    lambdas = scored_values(method)
    kinds = np.load(job.inputs["queries"])["kind"]
    batch = projection_batch(job.unet, job, projection_dim=method["projection_dim"], n_queries=len(job.queries), n_train=len(job.train), values=len(lambdas))
    (settings,) = projected_feature_sets(method, "loss")
    train_features, projector = job_training_features(job, 0, settings, job.unet, job.scheduler, job.model_manifest, batch)
    scores = journey_scores_from_features(
        job.unet,
        job.scheduler,
        train_features,
        projector,
        job.queries,
        kinds,
        lambdas,
        sampling=method["query_sampling"],
        steps=method["steps"],
        draws_per_step=method["draws_per_step"],
        seed=method["seed"],
        lambda_scale=method["lambda_scale"],
    )
    return lambdas, same_for_every_measurement(job, scores)
