"""Generating query images from the full-data model by DDPM ancestral sampling."""

from __future__ import annotations

import copy

import torch


@torch.no_grad()
def ddpm_sample(unet, scheduler, n_samples: int, num_inference_steps: int, seed: int, batch_size: int = 256) -> torch.Tensor:
    """Ancestral sampling with ``scheduler.step``: [n_samples, C, H, W] in [-1, 1].

    Sample s uses the initial and per-step noise of its own batch's generator,
    seeded by (seed, batch index), so the same seed and batch size regenerate
    the same images.
    """
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps)
    unet.eval()
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size) if isinstance(size, int) else (unet.config.in_channels, *size)
    device = next(unet.parameters()).device
    batches = []
    for index, first in enumerate(range(0, n_samples, batch_size)):
        count = min(batch_size, n_samples - first)
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        sample = torch.randn((count, *shape), generator=generator).to(device)
        for t in scheduler.timesteps:
            eps = unet(sample, t).sample
            sample = scheduler.step(eps, t, sample, generator=generator).prev_sample
        batches.append(sample.clamp(-1, 1).cpu())
    return torch.cat(batches)
