"""Measurement types, torch-free: the one home of each type's orientation,
unit, descriptions and the settings that define its output function.

Config checks, the rules, the summary and the similarity baselines read
these facts without importing torch; ``measurement`` adds each type's
output function and estimator. A type's default settings live in its
schema block (``$defs/{type}_measurement``); ``measurement.measurement_defaults``
reads them.

A measurement's query gradient is defined by its type and its
``output_keys`` settings; its draws and seed only change the ground truth.
Measurements with the same gradient settings share one query-side output
function, so a scoring job computes their query gradients once
(``query_output_groups``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Orientation: which direction of a value is better. It never changes a
# score or an LDS; it is stored next to every value, picks which end of a
# ranking the removal branch takes, and turns a similarity into a score
# (docs/methods.md).
LOWER_IS_BETTER = "lower_is_better"
HIGHER_IS_BETTER = "higher_is_better"
# The squared norm of the predicted noise says nothing about how good the
# model is on the query (a model can lower it by predicting less noise,
# right or wrong), so it gets neither quality orientation.
NOT_A_QUALITY_MEASURE = "not_a_quality_measure"
ORIENTATION_TEXT = {
    LOWER_IS_BETTER: "lower is better",
    HIGHER_IS_BETTER: "higher is better",
    NOT_A_QUALITY_MEASURE: "not a quality measure",
}


@dataclass(frozen=True)
class MeasurementType:
    name: str
    orientation: str
    unit: str
    description: str
    # What scoring differentiates for the query gradient.
    gradient: str
    # Settings that define the output function (and so the query gradient).
    output_keys: tuple[str, ...] = ()
    # Monte Carlo over (t, eps) draws, or one ODE solve per draw.
    kind: str = "monte_carlo"
    # Whether timesteps are drawn (and can be stratified).
    stratifiable: bool = True

    @property
    def needs_levels(self) -> bool:
        """Whether the type needs the data's number of grey levels (filled in
        from the dataset by the config check)."""
        return "levels" in self.output_keys


MEASUREMENT_TYPES = {
    "loss": MeasurementType(
        name="loss",
        orientation=LOWER_IS_BETTER,
        unit="squared error per pixel",
        description="simplified diffusion loss: E_{t~U{0..T-1}, eps~N(0,I)} mean over pixels of (eps - eps_theta(x_t, t))^2",
        gradient="the same per-draw loss, averaged over the method's query draws",
    ),
    "loss_at_t": MeasurementType(
        name="loss_at_t",
        orientation=LOWER_IS_BETTER,
        unit="squared error per pixel",
        description="simplified diffusion loss at one timestep t (``timestep``): E_{eps~N(0,I)} mean over pixels of (eps - eps_theta(x_t, t))^2",
        gradient="the same per-draw loss at the fixed timestep",
        output_keys=("timestep",),
        stratifiable=False,
    ),
    "squared_norm": MeasurementType(
        name="squared_norm",
        orientation=NOT_A_QUALITY_MEASURE,
        unit="squared output per pixel",
        description="D-TRAK's output function: E_{t~U{0..T-1}, eps~N(0,I)} mean over pixels of eps_theta(x_t, t)^2",
        gradient="the same per-draw squared norm",
    ),
    "simplified_elbo": MeasurementType(
        name="simplified_elbo",
        orientation=LOWER_IS_BETTER,
        unit="nats per image",
        description=(
            "sum_{t=0}^{T-1} w_t E_eps sum over pixels of (eps - eps_theta(x_t, t))^2, "
            "w_t = beta_t / (2 alpha_t (1 - abar_t)), estimated as T E_{t~U{0..T-1}}[...]"
        ),
        gradient="the same per-draw weighted squared error",
    ),
    "elbo": MeasurementType(
        name="elbo",
        orientation=HIGHER_IS_BETTER,
        unit="bits per dimension",
        description=(
            "DDPM variational lower bound on log P(x0) of the query rounded to the data's levels "
            "(prior KL + KL terms with beta-tilde variance + discretised Gaussian decoder), "
            "negated and divided by D ln 2"
        ),
        gradient="the same per-draw estimator: decoder term and timestep-weighted KL term (the prior term has no parameters)",
        output_keys=("levels",),
    ),
    "log_likelihood": MeasurementType(
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
        output_keys=("levels",),
        kind="ode",
        stratifiable=False,
    ),
}


def measurement_type(name: str) -> MeasurementType:
    """The measurement type ``name``."""
    if name not in MEASUREMENT_TYPES:
        raise ValueError(f"measurement {name!r} is not one of: {', '.join(MEASUREMENT_TYPES)}")
    return MEASUREMENT_TYPES[name]


def orientation_of(entry: dict) -> str:
    """The orientation of a measurement config entry."""
    return measurement_type(entry["type"]).orientation


def measurement_gradient_settings(entry: dict) -> dict:
    """The part of a validated measurement entry that scoring depends on:
    its type and output-function settings (for a scoring job's params)."""
    return {"type": entry["type"], **{key: entry[key] for key in measurement_type(entry["type"]).output_keys}}


def query_output_groups(measurements: dict[str, dict]) -> list[tuple[dict, list[str]]]:
    """Measurement names grouped by their gradient settings
    (``measurement_gradient_settings``), in first-seen order: each
    group shares one query-side output function and so one set of query
    gradients."""
    groups: dict[str, tuple[dict, list[str]]] = {}
    for name, settings in measurements.items():
        key = repr(sorted(settings.items()))
        groups.setdefault(key, (settings, []))[1].append(name)
    return list(groups.values())


def split_by_group(stacked: np.ndarray, groups: list[tuple[dict, list[str]]]) -> dict[str, np.ndarray]:
    """``{name: [L, Q, N]}`` from scores of the stacked queries [L, S Q, N]
    (row s Q + q: query q under group s's output function)."""
    n_queries = stacked.shape[1] // len(groups)
    return {name: stacked[:, s * n_queries : (s + 1) * n_queries] for s, (_, names) in enumerate(groups) for name in names}


def same_for_every_measurement(job, scores: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: scores}`` for a method whose scores ignore the measurement."""
    return {name: scores for name in job.measurements}
