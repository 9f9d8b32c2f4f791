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

from typing import NamedTuple

import numpy as np
import torch

from ldsbench.diffusion.noise import Design, design_draws, draw_requests, likelihood_draws
from ldsbench.diffusion.outputs import LossAtTimestep, SimplifiedElbo, per_draw_output, timestep_probabilities
from ldsbench.measurement.elbo import ElboDraw, quantise
from ldsbench.measurement.likelihood import NonFiniteODEError, ODESolveError, dequantised_log_likelihood
from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.measurement_types import MEASUREMENT_TYPES, measurement_type
from ldsbench.spec.schema import block_defaults

# Each type's per-draw output function (``diffusion.per_draw_output``) from
# its settings; the type's other facts are in ``measurement_types``.
OUTPUT_FUNCTIONS = {
    "loss": lambda settings: "loss",
    "loss_at_t": lambda settings: LossAtTimestep(int(settings["timestep"])),
    "squared_norm": lambda settings: "squared_norm",
    "simplified_elbo": lambda settings: SimplifiedElbo(),
    "elbo": lambda settings: ElboDraw(int(settings["levels"])),
    # The ELBO's estimator is the log-likelihood's gradient surrogate
    # (``MeasurementType.gradient``).
    "log_likelihood": lambda settings: ElboDraw(int(settings["levels"])),
}
assert OUTPUT_FUNCTIONS.keys() == MEASUREMENT_TYPES.keys()


def measurement_defaults(name: str) -> dict:
    """The settings a measurement of type ``name`` gets where its entry
    leaves them out: the defaults of its schema block."""
    return block_defaults(f"{measurement_type(name).name}_measurement")


def measurement_settings(measurement) -> dict:
    """Complete settings of a measurement given as a type name or a config
    entry: the entry over its type's schema defaults."""
    settings = {"type": measurement} if isinstance(measurement, str) else dict(measurement)
    if "type" not in settings:
        raise ValueError(f"measurement settings {settings!r} have no 'type'")
    spec = measurement_type(settings["type"])
    missing = [key for key in spec.output_keys if key not in settings]
    if missing:
        raise ValueError(f"measurement type {spec.name!r} needs the settings {missing}; pass its config entry, not just its name")
    return {**measurement_defaults(spec.name), **settings}


def measurement_output_fn(measurement):
    """The per-draw output function whose mean is the measurement (for
    ``log_likelihood``: its ELBO surrogate), for query gradients."""
    settings = measurement_settings(measurement)
    return OUTPUT_FUNCTIONS[settings["type"]](settings)


class NonFiniteMeasurementError(RuntimeError):
    """A measurement came out NaN or infinite."""


class Estimate(NamedTuple):
    mean: np.ndarray  # float64 [Q]
    stderr: np.ndarray  # float64 [Q]
    draws: np.ndarray  # int64 [Q], draws used per query
    # float64 [Q, R] replicate means (NaN past a query's draws), when asked for.
    replicates: np.ndarray | None = None


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
def estimate(unet, scheduler, queries: torch.Tensor, measurement, batch_size: int = 256, keep_replicates: bool = False) -> Estimate:
    """Mean, standard error and number of draws per query (and, with
    ``keep_replicates``, each replicate's mean: the mean of the first r
    replicates is the measurement at r replicates' draws).

    Draws are evaluated in blocks of ``draws`` per query; with
    ``target_stderr`` set, further blocks are added for the queries whose
    standard error is still above it, up to ``max_draws``. Such queries then
    share only their first draws with another model that stopped earlier.
    Raises NonFiniteMeasurementError naming every query whose value is NaN
    or infinite.
    """
    settings = measurement_settings(measurement)
    spec = measurement_type(settings["type"])
    stream = stream_seed(settings["seed"], "measure", spec.name)
    unet.eval()
    design = measurement_design(settings)
    if spec.kind == "ode":
        evaluate = _likelihood_evaluator(unet, scheduler, queries, settings, stream)
    else:
        evaluate = _monte_carlo_evaluator(unet, scheduler, queries, OUTPUT_FUNCTIONS[spec.name](settings), design, stream, batch_size)
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
    return Estimate(mean, stderr, accumulator.draws.copy(), accumulator.replicate_means() if keep_replicates else None)


def measurement_design(measurement) -> Design:
    """The draws' layout: timestep strata and antithetic pairs per replicate
    (the ODE log-likelihood: one draw per replicate)."""
    settings = measurement_settings(measurement)
    if measurement_type(settings["type"]).kind == "ode":
        return Design()
    return Design(strata=settings.get("strata", 1), antithetic=settings["antithetic"])


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

    def replicate_means(self) -> np.ndarray:
        """[Q, R] float64: each complete replicate's mean, NaN after a query's last."""
        means = self.sums / self.replicate_size
        means[np.arange(self.sums.shape[1]) >= (self.draws // self.replicate_size)[:, None]] = np.nan
        return means

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
