"""Common random numbers: (timestep, noise) draws as pure functions of keys.

A draw ``d`` for item ``i`` under stream seed ``s`` is identical for every
model, every batch size and every process, because draws are generated in
fixed blocks of ``BLOCK`` from a generator seeded by (s, i, block) alone.
Using the same draws for every retrained model removes most of the Monte
Carlo noise from differences between models.

``noise_draws`` gives plain uniform (t, eps) draws (training-side gradients
and curvature); ``design_draws`` adds stratified timesteps and antithetic
noise for measurements; ``likelihood_draws`` gives the dequantisation noise
and trace probes of the ODE log-likelihood.

Attribution methods key the draws of a training example or query by its
content (``content_key``), not by its row: an example gets the same draws
wherever it sits in the data set, so every method's scores are invariant to
the order of training examples and of queries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 64


def stream_seed(*keys) -> int:
    """A 63-bit seed derived from any tuple of ints and strings."""
    entropy = [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:16].ljust(16, b"\0"), "little") for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def content_key(image: torch.Tensor) -> int:
    """A 62-bit item key of an image [C, H, W] from its content alone.

    The sha256 of the shape and of the values as little-endian float32 bytes
    (so a float64 copy of a float32 image has the same key, on any device).
    Equal images get equal keys, hence equal draws.
    """
    values = image.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().astype("<f4", copy=False)
    digest = hashlib.sha256(repr(tuple(values.shape)).encode() + values.tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def content_keys(images: torch.Tensor) -> list[int]:
    """``content_key`` of every image in ``images`` [N, C, H, W]: N ints."""
    return [content_key(image) for image in images]


def _block(seed: int, item: int, block: int, shape: tuple, num_timesteps: int):
    generator = torch.Generator().manual_seed(stream_seed(seed, item, block))
    timesteps = torch.randint(0, num_timesteps, (BLOCK,), generator=generator)
    noise = torch.randn((BLOCK, *shape), generator=generator)
    return timesteps, noise


def noise_draws(seed: int, item: int, start: int, count: int, shape: tuple, num_timesteps: int):
    """Draws ``start .. start+count-1`` for one item.

    Returns timesteps int64 [count] uniform on {0..T-1} and noise float32
    [count, *shape] standard normal.
    """
    first, last = start // BLOCK, (start + count - 1) // BLOCK
    parts = [_block(seed, item, b, tuple(shape), num_timesteps) for b in range(first, last + 1)]
    timesteps = torch.cat([p[0] for p in parts])
    noise = torch.cat([p[1] for p in parts])
    offset = start - first * BLOCK
    return timesteps[offset : offset + count], noise[offset : offset + count]


@dataclass(frozen=True)
class Design:
    """How a measurement's draws are laid out (variance reduction).

    Draws come in independent *replicates* of ``strata * (2 if antithetic
    else 1)`` draws. Within a replicate, stratum j of ``strata`` draws its
    timestep uniformly from [j T / strata, (j + 1) T / strata) (each stratum
    with its own random offset), and with ``antithetic`` each (t, eps) is
    followed by (t, -eps). Every replicate mean is an unbiased estimate of
    E_{t ~ U{0..T-1}, eps ~ N(0, I)}[f]; replicates are independent, so the
    spread of replicate means gives an honest standard error.
    """

    strata: int = 1
    antithetic: bool = False

    @property
    def replicate_size(self) -> int:
        return self.strata * (2 if self.antithetic else 1)


def _base_block(seed: int, item: int, block: int, shape: tuple):
    generator = torch.Generator().manual_seed(stream_seed(seed, item, block, "design"))
    offsets = torch.rand((BLOCK,), generator=generator, dtype=torch.float64)
    noise = torch.randn((BLOCK, *shape), generator=generator)
    return offsets, noise


def design_draws(seed: int, item: int, start: int, count: int, shape: tuple, num_timesteps: int, design: Design, probabilities=None):
    """Draws ``start .. start+count-1`` of one item under ``design``.

    Draw d uses base draw b = d // 2 (antithetic) or b = d, which belongs to
    replicate b // strata and stratum j = b % strata, and v_b = (j + u_b) /
    strata with u_b ~ U[0, 1); over a uniformly chosen stratum v_b is
    uniform on [0, 1). The timestep is floor(v_b T) (uniform on {0..T-1}), or
    with ``probabilities`` ([T], an importance-sampling proposal) the
    smallest t whose cumulative probability exceeds v_b. Returns timesteps
    int64 [count] and noise float32 [count, *shape]; both are pure functions
    of (seed, item, d).
    """
    shape = tuple(shape)
    draws = torch.arange(start, start + count)
    pairs = 2 if design.antithetic else 1
    base = draws // pairs
    first, last = int(base[0]) // BLOCK, int(base[-1]) // BLOCK
    parts = [_base_block(seed, item, b, shape) for b in range(first, last + 1)]
    offsets = torch.cat([p[0] for p in parts])[base - first * BLOCK]
    noise = torch.cat([p[1] for p in parts])[base - first * BLOCK]
    quantiles = ((base % design.strata).double() + offsets) / design.strata
    if probabilities is None:
        timesteps = torch.floor(quantiles * num_timesteps).long()
    else:
        cumulative = torch.cumsum(torch.as_tensor(probabilities, dtype=torch.float64), 0)
        timesteps = torch.searchsorted(cumulative / cumulative[-1], quantiles, right=True)
    timesteps = timesteps.clamp(max=num_timesteps - 1)
    if design.antithetic:
        sign = 1.0 - 2.0 * (draws % 2).float()
        noise = noise * sign.view(-1, *([1] * len(shape)))
    return timesteps, noise


def likelihood_draws(seed: int, item: int, start: int, count: int, shape: tuple, probes: int = 1, distribution: str = "rademacher"):
    """Draws for the ODE log-likelihood of one item.

    Returns (dequantisation [count, *shape] float64 uniform on [0, 1),
    probes [count, probes, *shape] float64, Rademacher (+-1) or standard
    normal), a pure function of (seed, item, draw index).
    """
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"probe distribution {distribution!r} is not one of: rademacher, gaussian")
    shape = tuple(shape)
    uniforms, vectors = [], []
    for draw in range(start, start + count):
        generator = torch.Generator().manual_seed(stream_seed(seed, item, draw, "likelihood"))
        uniforms.append(torch.rand(shape, generator=generator, dtype=torch.float64))
        if distribution == "rademacher":
            vectors.append(torch.randint(0, 2, (probes, *shape), generator=generator).double() * 2 - 1)
        else:
            vectors.append(torch.randn((probes, *shape), generator=generator, dtype=torch.float64))
    return torch.stack(uniforms), torch.stack(vectors)


def draw_requests(requests, batch_size: int):
    """Batches of (item, first_draw, count) covering ``requests``, a list of
    (item, start, stop) draw ranges, at most ``batch_size`` draws per batch."""
    batch, size = [], 0
    for item, start, stop in requests:
        while start < stop:
            count = min(stop - start, batch_size - size)
            batch.append((item, start, count))
            size += count
            start += count
            if size == batch_size:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch
