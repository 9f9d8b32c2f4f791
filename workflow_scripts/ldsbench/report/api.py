"""Evaluating scores from Python: ``ldsbench.evaluate`` gives the tables the
workflow writes (``lds_summary.parquet``, ``lds_paired.parquet``,
``lds_per_query.parquet``, ``lds_sweep.parquet``) for scores computed
anywhere, against the ground truth of a finished results folder or of a
benchmark bundle (docs/python-api.md).

Every number comes from the functions the workflow's steps call
(``evaluation.method_lds``, ``evaluation.measurement_comparison``,
``report.tables``) with the config's ``tuning`` and ``statistics``, so the
same scores give the same tables, bitwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.measurement_comparison import compare_methods
from ldsbench.evaluation.method_lds import MethodLDS, check_score_files, check_scores, method_lds, subset_mask, sweep_lds
from ldsbench.report.tables import ordered_summary, per_query_table, sweep_table
from ldsbench.runtime.io import read_parquet_metadata
from ldsbench.runtime.provenance import check_compatible, subsets_sha256
from ldsbench.spec.config import validate_config
from ldsbench.spec.measurement_types import orientation_of
from ldsbench.spec.method_types import hyperparameter_name

__all__ = ["Evaluation", "evaluate", "DEFAULT_METHOD"]

#: The name of the method when ``scores`` is one array.
DEFAULT_METHOD = "method"
#: The keys of one method's scores with their values (the default and its grid).
_GRID_KEYS = {"values", "scores", "hyperparameter"}


@dataclass(frozen=True)
class Evaluation:
    """The tables of :func:`evaluate`, with the workflow's columns.

    Attributes:
        summary: ``lds_summary.parquet``'s rows and columns but
            ``gradient_passes`` (the plan's cost estimate): one row per method
            and measurement, plus ``retraining_ceiling`` when K >= 2.
        paired: ``lds_paired.parquet``: every pair of methods per measurement,
            tuned (cross-fitted) and untuned, with Holm-adjusted p-values.
        per_query: ``lds_per_query.parquet``: the cross-fitted tuned LDS of
            every query (``values`` = ``tuned``), then the untuned default's
            over all subsets (``default``).
        sweep: ``lds_sweep.parquet``: the LDS at every value of every method
            with a hyperparameter, on all queries and subsets.
    """

    summary: pd.DataFrame
    paired: pd.DataFrame
    per_query: pd.DataFrame
    sweep: pd.DataFrame


def _load_config(source: Path, config) -> dict:
    """The validated config of a bundle (its manifest's) or of a results
    folder (``config``: a dict or the path of a YAML file)."""
    manifest = source / "manifest.json"
    if manifest.is_file():
        if config is not None:
            raise ValueError(f"{source} is a bundle and carries its config in {manifest.name}; leave config out")
        bundled = json.loads(manifest.read_text())
        if "config" not in bundled:
            raise ValueError(f"{manifest} has no 'config': not a benchmark bundle")
        return validate_config(bundled["config"])
    if config is None:
        raise ValueError(f"{source} holds no manifest.json, so it is a results folder, which does not store its config: pass config= (a dict or a YAML path)")
    if isinstance(config, str | Path):
        import yaml

        config = yaml.safe_load(Path(config).read_text())
    return validate_config(config)


def _with_overrides(config: dict, tuning: dict | None, statistics: dict | None) -> dict:
    """``config`` with keys of its ``tuning`` and ``statistics`` blocks
    replaced, validated again."""
    if not tuning and not statistics:
        return config
    return validate_config({**config, "tuning": {**config["tuning"], **(tuning or {})}, "statistics": {**config["statistics"], **(statistics or {})}})


def _measurements(config: dict, measurement) -> list[str]:
    """The measurements to evaluate in the workflow's order of its
    comparison files (sorted by name)."""
    names = list(config["measurements"]) if measurement is None else [measurement] if isinstance(measurement, str) else list(measurement)
    unknown = [name for name in names if name not in config["measurements"]]
    if unknown or not names:
        raise ValueError(f"measurement {unknown or names} is not one of the config's: {', '.join(config['measurements'])}")
    return sorted(dict.fromkeys(names))


def _is_grid(entry) -> bool:
    return isinstance(entry, Mapping) and "scores" in entry


def _per_measurement(name: str, entry, measurements: list[str]) -> dict:
    """``{measurement: entry}`` of one method: a mapping keyed by measurement,
    or one entry for every measurement."""
    if isinstance(entry, Mapping) and not _is_grid(entry):
        missing = [m for m in measurements if m not in entry]
        if missing:
            raise ValueError(f"method {name!r} has no scores for measurement {missing} (it gives {', '.join(map(str, entry)) or 'none'})")
        return {m: entry[m] for m in measurements}
    return dict.fromkeys(measurements, entry)


def _values_and_scores(name: str, measurement: str, entry, n_queries: int, n_train: int | None) -> tuple[np.ndarray, list[np.ndarray], str | None]:
    """One method's values ``[L]`` (the default first), its L ``[Q, N]``
    score matrices and the name of its hyperparameter, checked."""
    label = f"method {name!r} on {measurement!r}"
    hyperparameter = None
    if _is_grid(entry):
        unknown = set(entry) - _GRID_KEYS
        if unknown:
            raise ValueError(f"{label}: unknown keys {sorted(unknown)}; a method's grid has {sorted(_GRID_KEYS)}")
        values, scores, hyperparameter = entry.get("values"), entry["scores"], entry.get("hyperparameter")
    elif isinstance(entry, tuple):
        if len(entry) != 2:
            raise ValueError(f"{label}: a grid is (values, scores [L, Q, N]), got a tuple of {len(entry)}")
        values, scores = entry
    else:
        values, scores = None, entry
    scores = np.asarray(scores)
    if values is None:
        if scores.ndim != 2:
            raise ValueError(f"{label}: scores without values must be one [queries, training examples] matrix, got shape {scores.shape}")
        values, scores = np.array([np.nan]), scores[None]
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{label}: values must be a 1-D list, the untuned default first, then the grid; got shape {values.shape}")
    if scores.ndim == 2 and values.size == 1:
        scores = scores[None]
    if scores.ndim != 3 or scores.shape[0] != values.size:
        raise ValueError(f"{label}: {values.size} values need scores of shape [{values.size}, queries, training examples], got {scores.shape}")
    if values.size > 1 and not np.isfinite(values).all():
        raise ValueError(f"{label}: the values of a grid must be finite, got {values.tolist()}")
    if np.unique(values).size != values.size:
        raise ValueError(f"{label}: the values repeat: {values.tolist()}")
    for value, value_scores in zip(values, scores, strict=True):
        check_scores(value_scores, n_queries, f"{label} at value {value:g}" if values.size > 1 else label, n_train=n_train)
    if hyperparameter is None and not np.isnan(values).all():
        # Unnamed values still make a sweep; NaN (no hyperparameter) makes none.
        hyperparameter = "value"
    return values, list(scores), hyperparameter


def _workflow_methods(source: Path, config: dict, include, given: list[str], measurements: list[str]) -> list[str]:
    """The config's methods whose stored scores (or group predictions) to
    compare with, in config order."""
    if not include:
        return []
    stored = [
        name
        for name in config["methods"]
        if all((source / "scores" / name / f"{m}.npy").is_file() or (source / "lds" / name / f"{m}.predictions.npz").is_file() for m in measurements)
    ]
    names = stored if include is True else [include] if isinstance(include, str) else list(include)
    unknown = [name for name in names if name not in config["methods"]]
    if unknown:
        raise ValueError(f"include_workflow_methods names {unknown}, not methods of the config ({', '.join(config['methods'])})")
    missing = [name for name in names if name not in stored]
    if missing or not names:
        raise ValueError(
            f"{source} holds no scores/{{method}}/{{measurement}}.npy or lds/{{method}}/{{measurement}}.predictions.npz of {missing or 'any method'} for {measurements}"
        )
    clashing = [name for name in names if name in given]
    if clashing:
        raise ValueError(f"methods {clashing} are given and also stored in {source}; rename yours or leave them out of include_workflow_methods")
    return [name for name in config["methods"] if name in names]


def _stored_n_train(source: Path, stored: list[str], measurement: str, subsets_frame: pd.DataFrame) -> int:
    """N of the first stored score file, or (from group predictions only,
    which need no N) one past the subsets' largest training index."""
    for name in stored:
        path = source / "scores" / name / f"{measurement}.npy"
        if path.is_file():
            return int(np.load(path, mmap_mode="r").shape[1])
    return int(subsets_frame["train_index"].max()) + 1


def _stored_method(source: Path, config: dict, name: str, measurement: str, subsets_frame, mask, truth, n_queries: int) -> MethodLDS:
    """A configured method's LDS from its stored scores and sweep, checked as
    the workflow checks them, or else from its stored group predictions."""
    hyperparameter = hyperparameter_name(config["methods"][name])
    folder, truth_path = source / "scores" / name, source / "ground_truth" / f"{measurement}.parquet"
    scores_path, sweep_path, manifest_path = folder / f"{measurement}.npy", folder / f"{measurement}.sweep.npz", folder / f"{measurement}.json"
    if scores_path.is_file():
        if manifest_path.is_file():
            check_score_files(scores_path, sweep_path, manifest_path, truth_path, subsets_frame, source / "subsets.parquet")
        scores, sweep = np.load(scores_path), np.load(sweep_path)
        # As in the workflow, non-finite stored scores leave their queries without an LDS.
        check_scores(scores, n_queries, scores_path, n_train=mask.shape[1], finite=False)
        return method_lds(name, measurement, hyperparameter, sweep["values"], [scores, *sweep["scores"]], mask, truth)
    archive = np.load(source / "lds" / name / f"{measurement}.predictions.npz")
    return sweep_lds(name, measurement, hyperparameter, archive["values"], archive["predictions"], truth)


def evaluate(
    scores,
    source,
    measurement=None,
    *,
    config=None,
    include_workflow_methods=False,
    tuning: dict | None = None,
    statistics: dict | None = None,
) -> Evaluation:
    """LDS of attribution scores with the workflow's statistics: two-way
    bootstrap intervals, cross-fitted tuning over a grid, LDS / ceiling, the
    query-agnostic control and paired differences with Holm's adjustment.

    Args:
        scores: one method's entry (named ``"method"``), or
            ``{name: entry}`` in the order of the tables. An entry is a
            ``[Q, N]`` array (no grid), ``(values, scores [L, Q, N])`` or
            ``{"values": [L], "scores": [L, Q, N], "hyperparameter": name}``
            (``values[0]`` the untuned default, the rest its grid), or
            ``{measurement: one of those}`` for scores that differ per
            measurement. Scores are in the benchmark's orientation: tau(q, i)
            predicts m(with i) - m(without i) (docs/definitions.md).
        source: a results folder (the config's ``results``) or a benchmark
            bundle (a folder with ``manifest.json``): its ``subsets.parquet``
            and ``ground_truth/{measurement}.parquet`` are read.
        measurement: a measurement name, a list of them, or None for every
            measurement of the config.
        config: for a results folder, which does not store its config: the
            config dict or the path of its YAML file (validated with
            ``spec.config.validate_config``). A bundle's is in its manifest.
        include_workflow_methods: False; True for every method of the config
            stored in ``source`` (``scores/{method}/{measurement}.npy`` with
            its ``.sweep.npz``, or ``lds/{method}/{measurement}.predictions.npz``);
            or a list of method names. They follow the given methods in the
            tables, in config order, so every given method gets paired
            differences against each.
        tuning, statistics: keys that replace the config's ``tuning`` and
            ``statistics`` blocks (e.g. ``{"resamples": 200}`` for a quick
            look; the workflow's numbers need the config's own).

    Returns:
        An :class:`Evaluation`.

    Raises:
        ValueError: before any bootstrap, naming the method and
            measurement, for scores of the
            wrong shape, non-finite scores, or values that are not a 1-D
            list of distinct finite numbers (one value may be NaN: no
            hyperparameter).
    """
    source = Path(source)
    config = _with_overrides(_load_config(source, config), tuning, statistics)
    measurements = _measurements(config, measurement)
    if not isinstance(scores, Mapping) or _is_grid(scores):
        scores = {DEFAULT_METHOD: scores}
    given = {str(name): _per_measurement(str(name), entry, measurements) for name, entry in scores.items()}
    stored = _workflow_methods(source, config, include_workflow_methods, list(given), measurements)
    if not given and not stored:
        raise ValueError("no scores to evaluate")
    methods = [*given, *stored]

    subsets_path = source / "subsets.parquet"
    if not subsets_path.is_file():
        raise ValueError(f"{source} holds no subsets.parquet: pass a results folder (the config's `results`) or a bundle")
    subsets_frame = pd.read_parquet(subsets_path)
    n_subsets, n_seeds = config["benchmark"]["subsets"], config["benchmark"]["seeds"]
    # N: the given scores' (every method's checked against the first's), else the stored ones'.
    n_train = None if given else _stored_n_train(source, stored, measurements[0], subsets_frame)

    # Every input is read and checked before the first (slow) bootstrap.
    subsets_hash, truths, entries = subsets_sha256(subsets_frame), {}, {}
    for name in measurements:
        truth_path = source / "ground_truth" / f"{name}.parquet"
        truth_frame = pd.read_parquet(truth_path)
        # Ground truth measured on other subsets would pair each group
        # prediction with another subset's models.
        check_compatible({"subsets_sha256": subsets_hash}, read_parquet_metadata(truth_path), subsets_path, truth_path)
        n_queries = truth_frame["query"].nunique()
        truths[name] = ground_truth_array(truth_frame, n_subsets, n_seeds, n_queries)
        for method in given:
            entries[method, name] = _values_and_scores(method, name, given[method][name], n_queries, n_train)
            n_train = entries[method, name][1][0].shape[1]
    mask = subset_mask(subsets_frame, n_train, n_subsets, subsets_path)

    summaries, paired, tuned_per_query, lds = [], [], [], {}
    for name, truth_per_seed in truths.items():
        truth = truth_per_seed.mean(axis=0)
        for method in given:
            values, matrices, hyperparameter = entries[method, name]
            lds[method, name] = method_lds(method, name, hyperparameter, values, matrices, mask, truth)
        for method in stored:
            lds[method, name] = _stored_method(source, config, method, name, subsets_frame, mask, truth, truth.shape[1])
        comparison = compare_methods(
            {method: (lds[method, name].values, lds[method, name].predictions) for method in methods},
            truth_per_seed,
            name,
            orientation_of(config["measurements"][name]),
            config["tuning"],
            config["statistics"],
        )
        summaries.append(comparison.summary)
        paired.append(comparison.paired)
        tuned_per_query.append(comparison.per_query)

    order = [m for m in config["measurements"] if m in measurements]
    return Evaluation(
        summary=ordered_summary(pd.concat(summaries, ignore_index=True), methods, order),
        paired=pd.concat(paired, ignore_index=True),
        per_query=per_query_table(tuned_per_query, [lds[method, name].per_query for method in methods for name in measurements]),
        sweep=sweep_table(pd.concat([lds[method, name].sweep for method in methods for name in measurements], ignore_index=True)),
    )
