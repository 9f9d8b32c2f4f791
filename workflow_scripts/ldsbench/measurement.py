"""Measurements m(q) of a trained model on each query.

A measurement is given by its settings, one entry of the config's
``measurements`` map (``{"type": "loss_at_t", "timestep": 500, ...}``), or
just a type name for the types that need no settings. Each type has an
orientation, stored next to every value so that no sign is ever flipped
implicitly; the orientation plays no part in scoring.

Every value is a Monte Carlo mean with its standard error. The draws of
query q are a pure function of (seed, q, draw index) (``noise.design_draws``,
``noise.likelihood_draws``): every model sees the same draws (common random
numbers), whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .diffusion import LossAtTimestep, SimplifiedElbo, per_draw_output, timestep_probabilities
from .elbo import ElboDraw, quantise
from .likelihood import NonFiniteODEError, ODESolveError, dequantised_log_likelihood
from .noise import Design, design_draws, draw_requests, likelihood_draws, stream_seed
from .orientation import HIGHER_IS_BETTER, LOWER_IS_BETTER, NOT_A_QUALITY_MEASURE


@dataclass(frozen=True)
class Measurement:
    name: str
    orientation: str
    unit: str
    description: str
    # What scoring differentiates for the query gradient.
    gradient: str
    # settings -> per-draw output function (``diffusion.per_draw_output``).
    make_output_fn: Callable[[dict], object]
    # Settings that define the output function (and so the query gradient).
    output_keys: tuple[str, ...] = ()
    # Monte Carlo over (t, eps) draws, or one ODE solve per draw.
    kind: str = "monte_carlo"
    # Whether timesteps are drawn (and can be stratified).
    stratifiable: bool = True


MEASUREMENTS = {
    "loss": Measurement(
        name="loss",
        orientation=LOWER_IS_BETTER,
        unit="squared error per pixel",
        description="simplified diffusion loss: E_{t~U{0..T-1}, eps~N(0,I)} mean over pixels of (eps - eps_theta(x_t, t))^2",
        gradient="the same per-draw loss, averaged over the method's query draws",
        make_output_fn=lambda settings: "loss",
    ),
    "loss_at_t": Measurement(
        name="loss_at_t",
        orientation=LOWER_IS_BETTER,
        unit="squared error per pixel",
        description="simplified diffusion loss at one timestep t (``timestep``): E_{eps~N(0,I)} mean over pixels of (eps - eps_theta(x_t, t))^2",
        gradient="the same per-draw loss at the fixed timestep",
        make_output_fn=lambda settings: LossAtTimestep(int(settings["timestep"])),
        output_keys=("timestep",),
        stratifiable=False,
    ),
    "squared_norm": Measurement(
        name="squared_norm",
        orientation=NOT_A_QUALITY_MEASURE,
        unit="squared output per pixel",
        description="D-TRAK's output function: E_{t~U{0..T-1}, eps~N(0,I)} mean over pixels of eps_theta(x_t, t)^2",
        gradient="the same per-draw squared norm",
        make_output_fn=lambda settings: "squared_norm",
    ),
    "simplified_elbo": Measurement(
        name="simplified_elbo",
        orientation=LOWER_IS_BETTER,
        unit="nats per image",
        description=(
            "sum_{t=0}^{T-1} w_t E_eps sum over pixels of (eps - eps_theta(x_t, t))^2, "
            "w_t = beta_t / (2 alpha_t (1 - abar_t)), estimated as T E_{t~U{0..T-1}}[...]"
        ),
        gradient="the same per-draw weighted squared error",
        make_output_fn=lambda settings: SimplifiedElbo(),
    ),
    "elbo": Measurement(
        name="elbo",
        orientation=HIGHER_IS_BETTER,
        unit="bits per dimension",
        description=(
            "DDPM variational lower bound on log P(x0) of the query rounded to the data's levels "
            "(prior KL + KL terms with beta-tilde variance + discretised Gaussian decoder), "
            "negated and divided by D ln 2"
        ),
        gradient="the same per-draw estimator: decoder term and timestep-weighted KL term (the prior term has no parameters)",
        make_output_fn=lambda settings: ElboDraw(int(settings["levels"])),
        output_keys=("levels",),
    ),
    "log_likelihood": Measurement(
        name="log_likelihood",
        orientation=HIGHER_IS_BETTER,
        unit="bits per dimension",
        description=(
            "log-likelihood of the uniformly dequantised query through the probability-flow ODE of the VP SDE "
            "(RK45, Hutchinson trace), plus D log(bin width), divided by D ln 2: a lower bound on log2 P(x0) per dimension"
        ),
        gradient=(
            "surrogate: the ELBO's per-draw estimator (differentiating through the adaptive ODE solve is too "
            "expensive); both are likelihood bounds of the same quantised query"
        ),
        make_output_fn=lambda settings: ElboDraw(int(settings["levels"])),
        output_keys=("levels",),
        kind="ode",
        stratifiable=False,
    ),
}

# Settings used when an entry leaves them out: the same values as the
# defaults in schemas/config.schema.yaml (a test keeps the two equal).
DEFAULTS = {
    "loss": {"draws": 128, "seed": 0, "strata": 16, "antithetic": False, "target_stderr": None, "max_draws": None},
    "loss_at_t": {"draws": 64, "seed": 0, "antithetic": False, "target_stderr": None, "max_draws": None},
    "squared_norm": {"draws": 128, "seed": 0, "strata": 16, "antithetic": False, "target_stderr": None, "max_draws": None},
    "simplified_elbo": {"draws": 128, "seed": 0, "strata": 16, "antithetic": False, "target_stderr": None, "max_draws": None},
    "elbo": {"draws": 128, "seed": 0, "strata": 16, "antithetic": False, "target_stderr": None, "max_draws": None},
    "log_likelihood": {
        "draws": 4,
        "seed": 0,
        "rtol": 1e-5,
        "atol": 1e-5,
        "t_min": 1e-5,
        "probes": 1,
        "probe_distribution": "rademacher",
        "queries_per_solve": 1,
        "target_stderr": None,
        "max_draws": None,
    },
}


def get_measurement(name: str) -> Measurement:
    """The measurement type ``name``."""
    if name not in MEASUREMENTS:
        raise ValueError(f"measurement {name!r} is not one of: {', '.join(MEASUREMENTS)}")
    return MEASUREMENTS[name]


def measurement_settings(measurement) -> dict:
    """Complete settings of a measurement given as a type name or a config entry."""
    settings = {"type": measurement} if isinstance(measurement, str) else dict(measurement)
    if "type" not in settings:
        raise ValueError(f"measurement settings {settings!r} have no 'type'")
    spec = get_measurement(settings["type"])
    missing = [key for key in spec.output_keys if key not in settings]
    if missing:
        raise ValueError(f"measurement type {spec.name!r} needs the settings {missing}; pass its config entry, not just its name")
    return {**DEFAULTS[spec.name], **settings}


def measurement_output_fn(measurement):
    """The per-draw output function whose mean is the measurement (for
    ``log_likelihood``: its ELBO surrogate), for query gradients."""
    settings = measurement_settings(measurement)
    return get_measurement(settings["type"]).make_output_fn(settings)


class NonFiniteMeasurementError(RuntimeError):
    """A measurement came out NaN or infinite."""


class Estimate(NamedTuple):
    mean: np.ndarray  # float64 [Q]
    stderr: np.ndarray  # float64 [Q]
    draws: np.ndarray  # int64 [Q], draws used per query


def measure(unet, scheduler, queries: torch.Tensor, measurement, n_draws: int | None = None, seed: int | None = None, batch_size: int = 256):
    """(mean [Q], standard_error [Q]) float64 of a measurement for queries [Q, C, H, W].

    ``n_draws`` and ``seed`` override the settings' ``draws`` and ``seed``.
    """
    settings = measurement_settings(measurement)
    if n_draws is not None:
        settings["draws"] = n_draws
    if seed is not None:
        settings["seed"] = seed
    result = estimate(unet, scheduler, queries, settings, batch_size)
    return result.mean, result.stderr


@torch.no_grad()
def estimate(unet, scheduler, queries: torch.Tensor, measurement, batch_size: int = 256) -> Estimate:
    """Mean, standard error and number of draws per query.

    Draws are evaluated in blocks of ``draws`` per query; with
    ``target_stderr`` set, further blocks are added for the queries whose
    standard error is still above it, up to ``max_draws``. Such queries then
    share only their first draws with another model that stopped earlier.
    Raises NonFiniteMeasurementError naming every query whose value is NaN
    or infinite.
    """
    settings = measurement_settings(measurement)
    spec = get_measurement(settings["type"])
    stream = stream_seed(settings["seed"], "measure", spec.name)
    unet.eval()
    if spec.kind == "ode":
        design = Design()
        evaluate = _likelihood_evaluator(unet, scheduler, queries, settings, stream)
    else:
        design = Design(strata=settings.get("strata", 1), antithetic=settings["antithetic"])
        evaluate = _monte_carlo_evaluator(unet, scheduler, queries, spec.make_output_fn(settings), design, stream, batch_size)
    block, target = settings["draws"], settings["target_stderr"]
    limit = settings["max_draws"] if target is not None else block
    _check_design(spec.name, block, limit, design)
    accumulator = _ReplicateSums(len(queries), limit // design.replicate_size, design.replicate_size)
    requests = [(q, 0, block) for q in range(len(queries))]
    while requests:
        for items, draws, values in evaluate(requests):
            accumulator.add(items, draws, values)
        mean, stderr = accumulator.estimates()
        if target is None:
            break
        requests = [
            (q, int(accumulator.draws[q]), int(min(accumulator.draws[q] + block, limit)))
            for q in range(len(queries))
            if np.isfinite(stderr[q]) and stderr[q] > target and accumulator.draws[q] < limit
        ]
    bad = np.flatnonzero(~np.isfinite(mean) | ~np.isfinite(stderr))
    if bad.size:
        raise NonFiniteMeasurementError(f"measurement {spec.name!r} is not finite for queries {bad.tolist()}")
    return Estimate(mean, stderr, accumulator.draws.copy())


def _check_design(name: str, block: int, limit: int, design: Design) -> None:
    size = design.replicate_size
    if block % size or block // size < 2:
        raise ValueError(f"measurement {name!r}: draws {block} must be a multiple of strata x (2 if antithetic) = {size}, with at least 2 replicates")
    if limit < block or limit % size:
        raise ValueError(f"measurement {name!r}: max_draws {limit} must be >= draws {block} and a multiple of {size}")


class _ReplicateSums:
    """Sums of per-draw values per (query, replicate).

    Replicates (groups of ``replicate_size`` consecutive draws) are
    independent and identically distributed, so the standard error is
    sd(replicate means) / sqrt(number of replicates), valid under
    stratification and antithetic pairs alike.
    """

    def __init__(self, n_items: int, capacity: int, replicate_size: int):
        self.sums = np.zeros((n_items, capacity))
        self.draws = np.zeros(n_items, dtype=np.int64)
        self.replicate_size = replicate_size

    def add(self, items: np.ndarray, draws: np.ndarray, values: np.ndarray) -> None:
        np.add.at(self.sums, (items, draws // self.replicate_size), values)
        np.add.at(self.draws, items, 1)

    def estimates(self) -> tuple[np.ndarray, np.ndarray]:
        mean, stderr = np.empty(len(self.sums)), np.empty(len(self.sums))
        for q, row in enumerate(self.sums):
            replicates = row[: self.draws[q] // self.replicate_size] / self.replicate_size
            mean[q] = replicates.mean()
            stderr[q] = replicates.std(ddof=1) / np.sqrt(len(replicates))
        return mean, stderr


def _monte_carlo_evaluator(unet, scheduler, queries, output_fn, design: Design, stream: int, batch_size: int):
    """requests [(item, start, stop)] -> iterator of (items, draw indices, values), each [B]."""
    shape, num_timesteps = tuple(queries.shape[1:]), scheduler.config.num_train_timesteps
    probabilities = timestep_probabilities(output_fn, scheduler)

    def evaluate(requests):
        for batch in draw_requests(requests, batch_size):
            items, indices, timesteps, noise = [], [], [], []
            for item, start, count in batch:
                t, eps = design_draws(stream, item, start, count, shape, num_timesteps, design, probabilities)
                items.append(torch.full((count,), item))
                indices.append(torch.arange(start, start + count))
                timesteps.append(t)
                noise.append(eps)
            # Draws are generated on the CPU (identical on every device), then moved.
            items = torch.cat(items)
            timesteps = torch.cat(timesteps).to(queries.device)
            noise = torch.cat(noise).to(queries.device, queries.dtype)
            x0 = queries[items.to(queries.device)]
            values = per_draw_output(unet, scheduler, x0, noise, timesteps, output_fn).double().cpu().numpy()
            yield items.numpy(), torch.cat(indices).numpy(), values

    return evaluate


def _likelihood_evaluator(unet, scheduler, queries, settings: dict, stream: int):
    """requests -> (items, draw indices, log-likelihoods in bits/dim).

    Each group of ``queries_per_solve`` consecutive queries (a grouping that
    depends on the settings only, never on the batch size) is one ODE system
    holding all its requested draws, so every model solves the same systems
    (with ``target_stderr``, later blocks hold only the queries that still
    need draws).
    A solve that fails or meets a non-finite prediction is repeated query by
    query, and the queries that still fail get NaN values, which
    ``estimate`` then reports.
    """
    shape, levels = tuple(queries.shape[1:]), int(settings["levels"])
    group_size = settings["queries_per_solve"]

    def solve(members):
        items, indices, x0, uniforms, probes = [], [], [], [], []
        for item, start, stop in members:
            u, v = likelihood_draws(stream, item, start, stop - start, shape, settings["probes"], settings["probe_distribution"])
            items.append(np.full(stop - start, item))
            indices.append(np.arange(start, stop))
            x0.append(quantise(queries[item], levels).expand(stop - start, *shape))
            uniforms.append(u)
            probes.append(v)
        items, indices = np.concatenate(items), np.concatenate(indices)
        try:
            values, _ = dequantised_log_likelihood(
                unet,
                scheduler,
                torch.cat(x0),
                torch.cat(uniforms),
                torch.cat(probes),
                levels,
                rtol=settings["rtol"],
                atol=settings["atol"],
                t_min=settings["t_min"],
            )
        except (NonFiniteODEError, ODESolveError):
            if len(members) > 1:
                yield from (result for member in members for result in solve([member]))
                return
            values = np.full(len(items), np.nan)
        yield items, indices, values

    def evaluate(requests):
        groups: dict[int, list] = {}
        for item, start, stop in requests:
            groups.setdefault(item // group_size, []).append((item, start, stop))
        for members in groups.values():
            yield from solve(members)

    return evaluate
