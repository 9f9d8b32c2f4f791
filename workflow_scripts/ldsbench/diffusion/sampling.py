"""Generating query images from the full-data model by DDPM ancestral sampling."""

from __future__ import annotations

import copy

import torch

from ldsbench.diffusion.precision import network_forward


def _prepare(unet, scheduler, num_inference_steps: int):
    """(scheduler set to the inference steps, sample shape (C, H, W), device)."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps)
    unet.eval()
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size) if isinstance(size, int) else (unet.config.in_channels, *size)
    return scheduler, shape, next(unet.parameters()).device


def _to_data_range(sample: torch.Tensor, scheduler) -> torch.Tensor:
    """Pixel models (``clip_sample``) have samples clipped to the images'
    [-1, 1]; latents are not confined to a range and are returned as sampled."""
    return sample.clamp(-1, 1) if scheduler.config.clip_sample else sample


def _sample_batch(unet, scheduler, count: int, shape: tuple, device, generator, rows=None, record=None) -> torch.Tensor:
    """One batch of ancestral sampling from ``generator``: [count, C, H, W],
    unclamped. With ``rows`` the UNet sees only those rows; the others follow
    the sampler with a zero noise prediction, so every random draw is the same.
    ``record(t, step_output)`` is called after every step."""
    sample = torch.randn((count, *shape), generator=generator).to(device)
    for t in scheduler.timesteps:
        if rows is None:
            eps = network_forward(unet, sample, t)
        else:
            eps = torch.zeros_like(sample)
            eps[rows] = network_forward(unet, sample[rows], t)
        output = scheduler.step(eps, t, sample, generator=generator)
        if record is not None:
            record(int(t), output)
        sample = output.prev_sample
    return sample


@torch.no_grad()
def ddpm_sample(unet, scheduler, n_samples: int, num_inference_steps: int, seed: int, batch_size: int = 256) -> torch.Tensor:
    """Ancestral sampling with ``scheduler.step``: [n_samples, C, H, W], in
    [-1, 1] where the scheduler clips (``_to_data_range``).

    Sample s uses the initial and per-step noise of its own batch's generator,
    seeded by (seed, batch index), so the same seed and batch size regenerate
    the same images.
    """
    scheduler, shape, device = _prepare(unet, scheduler, num_inference_steps)
    batches = []
    for index, first in enumerate(range(0, n_samples, batch_size)):
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        sample = _sample_batch(unet, scheduler, min(batch_size, n_samples - first), shape, device, generator)
        batches.append(_to_data_range(sample, scheduler).cpu())
    return torch.cat(batches)


@torch.no_grad()
def ddpm_resample_rows(unet, scheduler, rows, n_samples: int, num_inference_steps: int, seed: int, batch_size: int = 256) -> torch.Tensor:
    """Regenerate samples ``rows`` of ``ddpm_sample(unet, scheduler, n_samples,
    num_inference_steps, seed, batch_size)`` from the same noise: [len(rows), C, H, W].

    The generator of a batch is consumed for every sample of the batch, so the
    whole batch's noise is drawn as in ``ddpm_sample``; the UNet is evaluated
    only on the requested rows. With the model that made the samples, the
    result equals them up to floating point differences of the smaller UNet
    batch.
    """
    rows = [int(r) for r in rows]
    if any(not 0 <= r < n_samples for r in rows):
        raise ValueError(f"rows {rows} are not all in 0..{n_samples - 1}")
    scheduler, shape, device = _prepare(unet, scheduler, num_inference_steps)
    out = {}
    for index in sorted({r // batch_size for r in rows}):
        first = index * batch_size
        local = [r - first for r in rows if r // batch_size == index]
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        sample = _sample_batch(unet, scheduler, min(batch_size, n_samples - first), shape, device, generator, local)
        for r in local:
            out[first + r] = _to_data_range(sample[r], scheduler).cpu()
    return torch.stack([out[r] for r in rows])


@torch.no_grad()
def ddpm_predicted_x0(unet, scheduler, rows, timesteps, n_samples: int, num_inference_steps: int, seed: int, batch_size: int = 256) -> torch.Tensor:
    """The sampler's predicted clean image x0_hat(x_t, t) at each of ``timesteps``
    along the sampling trajectories of samples ``rows`` of ``ddpm_sample(unet,
    scheduler, n_samples, num_inference_steps, seed, batch_size)``:
    [len(rows), len(timesteps), C, H, W].

    x0_hat is the scheduler's ``pred_original_sample`` (clipped to [-1, 1] as
    the sampler clips it); at the last step, t = 0, it is the sample itself.
    """
    rows, wanted = [int(r) for r in rows], [int(t) for t in timesteps]
    if any(not 0 <= r < n_samples for r in rows):
        raise ValueError(f"rows {rows} are not all in 0..{n_samples - 1}")
    scheduler, shape, device = _prepare(unet, scheduler, num_inference_steps)
    missing = sorted(set(wanted) - {int(t) for t in scheduler.timesteps})
    if missing:
        raise ValueError(f"timesteps {missing} are not steps of the {num_inference_steps}-step sampler")
    out = {}
    for index in sorted({r // batch_size for r in rows}):
        first = index * batch_size
        local = [r - first for r in rows if r // batch_size == index]
        seen = {}

        def record(t, output):
            if t in wanted:
                seen[t] = output.pred_original_sample[local].cpu()

        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        _sample_batch(unet, scheduler, min(batch_size, n_samples - first), shape, device, generator, local, record)
        for position, r in enumerate(local):
            out[first + r] = torch.stack([seen[t][position] for t in wanted])
    return torch.stack([out[r] for r in rows])
