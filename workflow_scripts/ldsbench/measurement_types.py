"""What scoring needs to know of a measurement type, torch-free.

A measurement's query gradient is defined by its type and a few settings
(``MEASUREMENT_OUTPUT_KEYS``); its draws and seed only change the ground
truth. Measurements with the same gradient settings share one query-side
output function, so a scoring job computes their query gradients once
(``query_output_groups``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# The settings that define each measurement type's output function, and so
# its query gradient (``measurement.MEASUREMENTS[type].output_keys``); draws
# and seed only change the ground truth.
MEASUREMENT_OUTPUT_KEYS = {
    "loss": (),
    "loss_at_t": ("timestep",),
    "squared_norm": (),
    "simplified_elbo": (),
    "elbo": ("levels",),
    "log_likelihood": ("levels",),
}


def measurement_gradient_settings(entry: dict) -> dict:
    """The part of a validated measurement entry that scoring depends on:
    its type and output-function settings (for a scoring job's params)."""
    return {"type": entry["type"], **{key: entry[key] for key in MEASUREMENT_OUTPUT_KEYS[entry["type"]]}}


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
