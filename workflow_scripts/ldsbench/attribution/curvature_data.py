"""The data curvature is fitted on: every training example under fixed draws.

Each of the N training examples contributes ``draws_per_example`` pairs
(t, eps); a data point for curvlinops is one noised input
X = {"sample": x_t [B,C,H,W], "timestep": t [B]} with target y = eps
flattened to [B, C*H*W]. Batches are generated on the fly (never held in
memory at once) and identically on every pass, because curvlinops iterates
over the data several times.

The draws of an example are keyed by its content (``noise.content_key``), and
examples are visited in the order of their keys: the batches, and with them
curvlinops' Monte Carlo targets (``fisher_type="mc"``, drawn from one
generator in visiting order), are the same whatever the order of the
training images.
"""

from __future__ import annotations

import torch

from ldsbench.diffusion.noise import content_keys, noise_draws
from ldsbench.diffusion.outputs import noised
from ldsbench.runtime.seeds import stream_seed


class NoisedTrainingData:
    """Re-iterable batches of (X, y) over all (example, draw) pairs.

    ``images`` [N, C, H, W]; each batch holds the draws of
    ``max(1, batch_size // draws_per_example)`` whole examples.
    """

    def __init__(self, images: torch.Tensor, scheduler, draws_per_example: int, seed: int, batch_size: int = 256, dtype=torch.float64, device="cpu"):
        self.images, self.scheduler = images, scheduler
        self.draws, self.batch_size = draws_per_example, batch_size
        self.stream = stream_seed(seed, "curvature")
        self.dtype, self.device = dtype, device
        self.keys = content_keys(images)
        # Equal keys mean equal images with equal draws, so ties may be broken
        # by row without making the batches depend on the order.
        self.order = sorted(range(len(images)), key=lambda row: (self.keys[row], row))

    @property
    def num_data(self) -> int:
        return len(self.images) * self.draws

    def __iter__(self):
        shape, num_timesteps = tuple(self.images.shape[1:]), self.scheduler.config.num_train_timesteps
        examples_per_batch = max(1, self.batch_size // self.draws)
        for first in range(0, len(self.order), examples_per_batch):
            rows = self.order[first : first + examples_per_batch]
            draws = [noise_draws(self.stream, self.keys[i], 0, self.draws, shape, num_timesteps) for i in rows]
            timesteps = torch.cat([t for t, _ in draws]).to(self.device)
            noise = torch.cat([e for _, e in draws]).to(self.device, self.dtype)
            x0 = self.images[rows].to(self.device, self.dtype).repeat_interleave(self.draws, dim=0)
            yield {"sample": noised(self.scheduler, x0, noise, timesteps), "timestep": timesteps}, noise.flatten(start_dim=1)


def batch_size_of(inputs: dict) -> int:
    return inputs["sample"].shape[0]
