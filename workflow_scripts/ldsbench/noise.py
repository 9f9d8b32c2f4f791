"""Common random numbers: (timestep, noise) draws as pure functions of keys.

A draw ``d`` for item ``i`` under stream seed ``s`` is identical for every
model, every batch size and every process, because draws are generated in
fixed blocks of ``BLOCK`` from a generator seeded by (s, i, block) alone.
Using the same draws for every retrained model removes most of the Monte
Carlo noise from differences between models.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 64


def stream_seed(*keys) -> int:
    """A 63-bit seed derived from any tuple of ints and strings."""
    entropy = [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:16].ljust(16, b"\0"), "little") for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


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


def draw_pairs(n_items: int, n_draws: int, batch_size: int):
    """Batches of (item, first_draw, count) covering every item's draws, so that
    callers can evaluate many items' draws in one forward pass."""
    batch, size = [], 0
    for item in range(n_items):
        start = 0
        while start < n_draws:
            count = min(n_draws - start, batch_size - size)
            batch.append((item, start, count))
            size += count
            start += count
            if size == batch_size:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch
