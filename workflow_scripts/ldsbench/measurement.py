"""Measurements m(q) of a trained model on each query.

Each measurement has an orientation, stored next to every value so that no
sign is ever flipped implicitly. The Monte Carlo draws (t, eps) come from
``noise.noise_draws`` and are identical for every model (common random
numbers) and independent of the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import per_draw_output
from .noise import draw_pairs, noise_draws, stream_seed


@dataclass(frozen=True)
class Measurement:
    name: str
    output_fn: str
    orientation: str  # "lower_is_better" | "higher_is_better"
    description: str


MEASUREMENTS = {
    "loss": Measurement(
        name="loss",
        output_fn="loss",
        orientation="lower_is_better",
        description="simplified diffusion loss: E_{t~U{0..T-1}, eps~N(0,I)} mean over pixels of (eps - eps_theta(x_t, t))^2",
    ),
}


def get_measurement(name: str) -> Measurement:
    if name not in MEASUREMENTS:
        raise ValueError(f"measurement {name!r} is not one of: {', '.join(MEASUREMENTS)}")
    return MEASUREMENTS[name]


class NonFiniteMeasurementError(RuntimeError):
    """A measurement came out NaN or infinite."""


@torch.no_grad()
def measure(unet, scheduler, queries: torch.Tensor, measurement: str, n_draws: int, seed: int, batch_size: int = 256):
    """Monte Carlo estimate of m(q) for every query.

    queries: [Q, C, H, W]. Returns (mean [Q], standard_error [Q]) as float64
    numpy arrays. Draw d of query q uses ``noise_draws(stream, q, d, ...)``
    with ``stream = stream_seed(seed, "measure", measurement)``.
    """
    spec = get_measurement(measurement)
    stream = stream_seed(seed, "measure", spec.name)
    shape, num_timesteps = tuple(queries.shape[1:]), scheduler.config.num_train_timesteps
    total = np.zeros(len(queries))
    total_sq = np.zeros(len(queries))
    unet.eval()
    for batch in draw_pairs(len(queries), n_draws, batch_size):
        items, timesteps, noise = [], [], []
        for item, start, count in batch:
            t, eps = noise_draws(stream, item, start, count, shape, num_timesteps)
            items.append(torch.full((count,), item))
            timesteps.append(t)
            noise.append(eps)
        # Draws are generated on the CPU (identical on every device), then moved.
        items = torch.cat(items)
        timesteps = torch.cat(timesteps).to(queries.device)
        noise = torch.cat(noise).to(queries.device, queries.dtype)
        values = per_draw_output(unet, scheduler, queries[items.to(queries.device)], noise, timesteps, spec.output_fn).double().cpu().numpy()
        np.add.at(total, items.numpy(), values)
        np.add.at(total_sq, items.numpy(), values**2)
    mean = total / n_draws
    variance = np.maximum(total_sq / n_draws - mean**2, 0.0) * n_draws / max(n_draws - 1, 1)
    standard_error = np.sqrt(variance / n_draws)
    bad = np.flatnonzero(~np.isfinite(mean))
    if bad.size:
        raise NonFiniteMeasurementError(f"measurement {measurement!r} is not finite for queries {bad.tolist()}")
    return mean, standard_error
