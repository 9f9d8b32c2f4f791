"""Common random numbers: (timestep, noise) draws as pure functions of keys.

A draw ``d`` for item ``i`` under stream seed ``s`` is identical for every
model, every batch size and every process, because draws are generated in
fixed blocks of ``BLOCK`` from a generator seeded by (s, i, block) alone.
Using the same draws for every retrained model removes most of the Monte
Carlo noise from differences between models.

``noise_draws`` gives plain uniform (t, eps) draws (curvature);
``design_draws`` adds stratified timesteps and antithetic noise
(measurements); ``GradientDraws`` lays out the draws of an attribution
gradient (uniform, stratified or evenly spaced timesteps, optionally
antithetic, optionally common to every example and query); ``likelihood_draws`` gives the dequantisation noise and trace
probes of the ODE log-likelihood.

Attribution methods key the draws of a training example or query by its
content (``content_key``), not by its row: an example gets the same draws
wherever it sits in the data set, so every method's scores are invariant to
the order of training examples and of queries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.schema import defs_enum

BLOCK = 64


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
    # Every stratum at its lower edge instead of a random offset in it:
    # fixed, evenly spaced timesteps (a quadrature over t, not an unbiased
    # estimate; the layout of D-TRAK's and DAS's code).
    evenly_spaced: bool = False

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
    if design.evenly_spaced:
        offsets = torch.zeros_like(offsets)
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


COMMON_ITEM = 0  # the item key of draws shared by every example

#: Timestep layouts of an attribution gradient (``GradientDraws.timesteps``).
#: Timestep layouts of gradient draws (the schema's ``$defs/gradient_draws``).
GRADIENT_TIMESTEPS = defs_enum("gradient_draws", "timesteps")


@dataclass(frozen=True)
class GradientDraws:
    """The (t, eps) draws averaged in one attribution gradient (``gradients``).

    ``count`` draws per example, n = ``count`` timesteps (``count / 2`` with
    ``antithetic``, each t then used with eps and -eps). ``timesteps``:

    - "uniform": every t drawn independently from U{0..T-1};
    - "stratified": one t in each of n equal timestep strata, at a random
      offset in it, so the average covers the whole schedule in every
      estimate; unbiased for E_{t, eps}, like "uniform";
    - "evenly_spaced": the fixed timesteps t_j = floor(j T / n), j = 0..n-1,
      for every example: ``range(0, T, T // n)`` of D-TRAK's and DAS's code
      whenever n divides T. A quadrature over t, not an unbiased estimate.

    With ``common`` every training example and every query uses the same
    draws (keyed by ``COMMON_ITEM`` in one stream, :meth:`stream`, instead
    of by its content in a stream of its side and output function): draw d is
    the same (t, eps) on both sides and for every output function, as the
    noise re-seeded per timestep in D-TRAK's and DAS's code. The Monte Carlo
    error of different examples' gradients is then correlated.
    """

    count: int
    timesteps: str = "uniform"
    antithetic: bool = False
    common: bool = False

    def __post_init__(self):
        if self.timesteps not in GRADIENT_TIMESTEPS:
            raise ValueError(f"gradient draws: timesteps {self.timesteps!r} is not one of: {', '.join(GRADIENT_TIMESTEPS)}")
        if self.count < 1 or (self.antithetic and self.count % 2):
            raise ValueError(f"gradient draws: count {self.count} must be positive{' and even with antithetic' if self.antithetic else ''}")

    @classmethod
    def of(cls, count: int, settings: dict | None = None) -> GradientDraws:
        """From a draw count and a config's ``gradient_draws`` block (None: uniform)."""
        return cls(count, **(settings or {}))

    def item(self, key: int) -> int:
        """The item whose draws an example with content key ``key`` uses."""
        return COMMON_ITEM if self.common else key

    def stream(self, seed: int, *labels) -> int:
        """The stream of the draws of a gradient with ``labels`` (its side and
        output function, e.g. ``"train_gradient", "loss"``) under ``seed``:
        with ``common`` one stream for every side and output function."""
        return stream_seed(seed, "common_gradient_draws") if self.common else stream_seed(seed, *labels)

    def draws(self, stream: int, key: int, start: int, count: int, shape: tuple, num_timesteps: int, probabilities=None):
        """Draws ``start .. start+count-1`` of the example with content key
        ``key``: timesteps int64 [count], noise float32 [count, *shape].
        ``probabilities`` [T]: an importance-sampling proposal for t (the
        evenly spaced timesteps are then its quantiles j / n)."""
        item = self.item(key)
        if self.timesteps == "uniform" and not self.antithetic:
            if probabilities is None:
                return noise_draws(stream, item, start, count, shape, num_timesteps)
            return design_draws(stream, item, start, count, shape, num_timesteps, Design(), probabilities)
        strata = self.count // 2 if self.antithetic else self.count
        design = Design(strata=1 if self.timesteps == "uniform" else strata, antithetic=self.antithetic, evenly_spaced=self.timesteps == "evenly_spaced")
        return design_draws(stream, item, start, count, shape, num_timesteps, design, probabilities)


def as_gradient_draws(draws) -> GradientDraws:
    """``draws`` as ``GradientDraws``: an int is that many uniform draws."""
    return draws if isinstance(draws, GradientDraws) else GradientDraws(int(draws))


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
