"""Diffusion-TracIn and Diffusion-ReTrac (Xie et al.): attribution by replaying
the full model's training.

TracIn (Pruthi et al. 2020) credits training example i with the change of
m(q) caused by the optimizer steps that used it. A step s with learning rate
eta_s on a batch of B examples moves theta by -(eta_s / B) grad l(x_i, t, eps)
for i's draw (t, eps), which changes m(q) by about -(eta_s / B) grad m(q)^T
grad l(x_i, t, eps). Summing over the steps i was in, with the weights of
the checkpoint that closes each interval (TracInCP),

    tau(q, i) = SCORE_SIGN * sum_c sum_{s in (c-1, c], i in batch_s} (eta_s / B)
                g_q(theta_c)^T grad l(x_i, t_s, eps_s; theta_c),

in the package's orientation (m(with i) - m(without i); SCORE_SIGN = -1).
Each training example's gradient is taken at the very timesteps and noise
it saw in training (``training.step_draws`` replays them; flips included),
not at fresh draws. Adam's preconditioning and gradient clipping are
ignored, as in TracIn.

ReTrac normalises away the timestep-dependent gradient norm that otherwise
lets a few small-t draws dominate: every per-draw training gradient and the
query gradient at each checkpoint are scaled to unit norm before the
products (so tau is a sum of learning-rate-weighted cosines).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ldsbench.attribution.scoring import SCORE_SIGN, stacked_query_gradient_batches
from ldsbench.diffusion.model import attributed_parameters
from ldsbench.diffusion.noise import GradientDraws
from ldsbench.diffusion.outputs import per_draw_output
from ldsbench.diffusion.training import TrainingSettings, learning_rates, snapshot_steps, step_draws
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.planning.footprint import footprint_of
from ldsbench.planning.memory import choose_tracin_chunking, method_sizes
from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.measurement_types import query_output_groups, split_by_group


def seen_draws(
    images: torch.Tensor, settings: TrainingSettings, num_timesteps: int, first: int, last: int, max_draws: int | None = None, seed: int = 0
) -> dict:
    """Draws each example received in steps ``first .. last - 1``:
    {row: (x0 [n, C, H, W], timesteps [n], noise [n, C, H, W], weights [n])},
    weight = eta_s / B of the step. With ``max_draws``, an example seen more
    often keeps a random ``max_draws`` of its draws (keyed by seed, row and
    interval), each weight scaled by seen / kept: an unbiased estimate of the
    full sum at a fraction of the backward passes."""
    rates = learning_rates(settings)
    per_row: dict[int, list] = {}
    for step in range(first, last):
        rows, x0, timesteps, noise = step_draws(images, settings, num_timesteps, step)
        weight = rates[step] / settings.batch_size
        for b, row in enumerate(rows.tolist()):
            per_row.setdefault(row, []).append((x0[b], timesteps[b], noise[b], weight))
    result = {}
    for row, draws in per_row.items():
        scale = 1.0
        if max_draws is not None and len(draws) > max_draws:
            rng = np.random.default_rng(stream_seed(seed, "tracin_draws", row, first, last))
            scale = len(draws) / max_draws
            draws = [draws[j] for j in sorted(rng.choice(len(draws), size=max_draws, replace=False))]
        result[row] = (
            torch.stack([d[0] for d in draws]),
            torch.stack([d[1] for d in draws]),
            torch.stack([d[2] for d in draws]),
            scale * torch.tensor([d[3] for d in draws], dtype=torch.float64),
        )
    return result


def _flat_grad(value: torch.Tensor, params) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


def seen_gradient(unet, scheduler, x0, timesteps, noise, weights, normalize: bool) -> torch.Tensor:
    """[P] float64: sum over one example's seen draws (x0 [n, C, H, W],
    timesteps [n], noise [n, C, H, W], weights [n]) of weight x grad of its
    loss; with ``normalize`` each per-draw gradient at unit norm first."""
    params = attributed_parameters(unet)
    device = next(unet.parameters()).device
    x0, timesteps, noise, weights = x0.to(device), timesteps.to(device), noise.to(device), weights.to(device)
    if not normalize:
        losses = per_draw_output(unet, scheduler, x0, noise, timesteps, "loss")
        return _flat_grad((losses.double() * weights).sum(), params).double()
    total = None
    for d in range(len(timesteps)):
        loss = per_draw_output(unet, scheduler, x0[d : d + 1], noise[d : d + 1], timesteps[d : d + 1], "loss").sum()
        grad = _flat_grad(loss, params).double()
        grad = weights[d] * grad / grad.norm().clamp_min(1e-30)
        total = grad if total is None else total + grad
    return total


def tracin_scores(
    unet,
    scheduler,
    checkpoints: dict,
    train_images: torch.Tensor,
    queries: torch.Tensor,
    settings: TrainingSettings,
    *,
    measurement_fn=None,
    measurement_fns: list | None = None,
    query_draws: int | GradientDraws,
    seed: int,
    normalize: bool,
    max_draws: int | None = None,
    queries_per_chunk: int | None = None,
) -> np.ndarray:
    """TracIn (``normalize=False``) or ReTrac (``True``) scores: [Q, N]
    float32 for ``measurement_fn``, or [S Q, N] for the S output functions
    ``measurement_fns`` (row s Q + q), whose training gradients are shared.

    Args:
        unet: a UNet of the full model's architecture (its weights are replaced).
        checkpoints: {step: raw state dict after that step}, the steps of
            ``training.snapshot_steps(settings)``.
        train_images: [N, C, H, W] the full model's training set, in row order.
        queries: [Q, C, H, W].
        settings: the full model's training settings (seed, batch size, lr).
        measurement_fn: the measurement's per-draw output function (query side).
        measurement_fns: several (one per measurement), instead of measurement_fn.
        max_draws: seen draws used per example and checkpoint interval
            (``seen_draws``); None: all of them.
        queries_per_chunk: query gradients [Qc, P] held at once per
            checkpoint (None: all); every further chunk recomputes the
            training gradients (``memory.choose_tracin_chunking``).
    """
    expected = snapshot_steps(settings)
    if sorted(checkpoints) != expected:
        raise ValueError(f"checkpoints at steps {sorted(checkpoints)}, expected {expected}")
    if (measurement_fn is None) == (measurement_fns is None):
        raise ValueError("give measurement_fn or measurement_fns")
    fns = [measurement_fn] if measurement_fns is None else list(measurement_fns)
    device = next(unet.parameters()).device
    num_timesteps = scheduler.config.num_train_timesteps
    n_rows = len(fns) * len(queries)
    scores = torch.zeros(n_rows, len(train_images), dtype=torch.float64, device=device)
    previous = 0
    for step in expected:
        unet.load_state_dict(checkpoints[step])
        unet.eval()
        seen = seen_draws(train_images.cpu(), settings, num_timesteps, previous, step, max_draws, seed)
        chunk = queries_per_chunk or n_rows
        for first in range(0, n_rows, chunk):
            rows = slice(first, min(first + chunk, n_rows))
            blocks = stacked_query_gradient_batches(unet, scheduler, queries, fns, range(rows.start, rows.stop), query_draws, seed)
            query = torch.cat([grads for _, grads in blocks]).double()
            if normalize:
                query = query / query.norm(dim=1, keepdim=True).clamp_min(1e-30)
            # Training gradients are streamed one example at a time, never stored.
            for row, draws in seen.items():
                scores[rows, row] += query @ seen_gradient(unet, scheduler, *draws, normalize)
        previous = step
    return (SCORE_SIGN * scores).cpu().numpy().astype(np.float32)


def score_tracin(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: tracin`` (``methods``), from the full model's
    replayed training (``job.inputs["trajectory"]``: ``trajectory.json`` and
    ``step_{s}.pt`` raw weights)."""
    method, trajectory = job.method, Path(job.inputs["trajectory"])
    steps = json.loads((trajectory / "trajectory.json").read_text())["steps"]
    checkpoints = {step: torch.load(trajectory / f"step_{step}.pt", map_location=job.device) for step in steps}
    groups = query_output_groups(job.measurements)
    chunk = None
    if job.budget_bytes is not None:
        sizes = method_sizes(footprint_of(job.unet), "tracin", min(job.draws_per_pass, method["query_draws"]))
        chunk = choose_tracin_chunking(
            job.budget_bytes, queries=len(groups) * len(job.queries), setting=job.budget_setting, train=len(job.train), **sizes
        ).queries_per_chunk
    scores = tracin_scores(
        job.unet,
        job.scheduler,
        checkpoints,
        job.train,
        job.queries,
        TrainingSettings.from_config(job.training),
        measurement_fns=[measurement_output_fn(settings) for settings, _ in groups],
        query_draws=GradientDraws.of(method["query_draws"], method.get("gradient_draws")),
        seed=method["seed"],
        normalize=method["normalize"],
        max_draws=method["draws_per_checkpoint"],
        queries_per_chunk=chunk,
    )
    return [float("nan")], split_by_group(scores[None], groups)
