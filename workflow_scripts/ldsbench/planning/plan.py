"""The plan before launch: per rule, how many jobs, each job's peak memory,
and its cost in forward+backward passes of one draw.

Torch-free (the model's sizes come from ``footprint``, cached as JSON), so
the workflow can size every job's ``resources`` and refuse a run that
cannot fit before any job starts. Peak memory is on the device a job
computes on (``runtime.gpu_memory_gb`` bounds it on a GPU,
``runtime.memory_gb`` on the CPU); the formulas are ``ldsbench.planning.memory``'s.

Cost: per job, ``passes`` (forward and backward passes of one draw, one
image at one timestep, through the UNet) and ``forward_passes`` (forward
passes alone). ``device_hours`` divides them by the device's two rates
(``DeviceRates``): those ``snakemake calibrate`` measured for the
configured model on the jobs' device, or ``runtime.draws_per_second``
where the user gives one (a forward pass then counts a third of a step).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ldsbench.planning.memory import (
    FLOAT32,
    FLOAT64,
    GIB,
    PROCESS_BASE_BYTES,
    GradientChunking,
    MemoryBudgetError,
    choose_feature_batch,
    choose_influence_chunking,
    choose_iterative_influence_chunking,
    choose_projection_batch,
    choose_tracin_chunking,
    choose_unlearning_batch,
    feature_sizes,
    ggn_batch_draws,
    influence_bytes,
    iterative_influence_bytes,
    method_sizes,
    nda_bytes,
    projected_feature_bytes,
    projection_cache_bytes,
    tracin_bytes,
    unlearning_bytes,
)
from ldsbench.spec.curvature_keys import curvature_fits
from ldsbench.spec.feature_keys import feature_key
from ldsbench.spec.measurement_types import measurement_gradient_settings, query_output_groups
from ldsbench.spec.method_types import feature_sets, method_type, needs, training_feature_sets

FORWARD = 1 / 3  # a forward pass, in forward+backward passes
# Adam's two moments, the EMA copy, the weights and their gradients.
TRAINING_COPIES = 5
MEASUREMENT_BATCH = 256  # ldsbench.measurement.estimators's draws per forward pass
TRAK_BATCH = 256  # training gradients per projected batch, at most
ODE_EVALUATIONS = 100  # network evaluations of one probability-flow ODE solve (rough)
CALIBRATION_SECONDS = 5.0  # `snakemake calibrate`'s timing of each rate, after a warm-up
_FOOTPRINT_FORMAT = "ldsbench.footprint.v1"


@dataclass(frozen=True)
class JobEstimate:
    """One rule's (or one method's) jobs: ``peak_bytes`` on the job's device,
    ``passes`` (forward and backward) and ``forward_passes`` (forward alone)
    per job, and the setting to change if it does not fit."""

    rule: str
    jobs: int
    peak_bytes: int
    passes: float
    setting: str
    forward_passes: float = 0.0

    @property
    def step_equivalents(self) -> float:
        """Passes per job with a forward pass counted a third of a step: the
        cost unit of the summary's ``gradient_passes``."""
        return self.passes + self.forward_passes * FORWARD


@dataclass(frozen=True)
class DeviceRates:
    """Draws per second on the jobs' device: ``train`` of forward and
    backward passes, ``forward`` of forward passes alone; ``source`` says
    where they come from."""

    train: float
    forward: float
    source: str

    def device_hours(self, row: JobEstimate) -> float:
        """Hours of one job at a time for all of ``row``'s jobs."""
        return row.jobs * (row.passes / self.train + row.forward_passes / self.forward) / 3600


CALIBRATION_KEYS = ("device", "precision", "training_batch", "measurement_batch", "train_draws_per_second", "forward_draws_per_second")


def device_rates(draws_per_second: float | None, calibration: dict | None) -> DeviceRates | None:
    """The plan's rates: ``runtime.draws_per_second`` where the user gives
    one (a forward pass at three times it), otherwise the ``calibration``
    that ``snakemake calibrate`` wrote (``throughput.measure_rates``), or
    None."""
    if draws_per_second:
        return DeviceRates(draws_per_second, draws_per_second / FORWARD, f"runtime.draws_per_second = {draws_per_second:g}")
    if calibration is None:
        return None
    return DeviceRates(
        calibration["train_draws_per_second"],
        calibration["forward_draws_per_second"],
        f"measured on {calibration['device']} at {calibration['precision']}: "
        f"{calibration['train_draws_per_second']:.4g} training draws/s at batch {calibration['training_batch']}, "
        f"{calibration['forward_draws_per_second']:.4g} forward draws/s at batch {calibration['measurement_batch']}",
    )


def read_calibration(path) -> dict:
    """The rates ``snakemake calibrate`` wrote to ``path`` (JSON), checked."""
    calibration = json.loads(Path(path).read_text())
    missing = [key for key in CALIBRATION_KEYS if key not in calibration]
    if missing:
        raise ValueError(f"{path}: not a calibration file (missing {', '.join(missing)}); delete it and run `snakemake calibrate`")
    return calibration


def cached_footprint(unet_config: dict, cache_dir):
    """``footprint.ModelFootprint`` of the config's UNet, read from
    ``cache_dir`` when an earlier run computed it (torch is imported only
    when it is not there)."""
    from ldsbench.runtime.io import config_hash

    path = Path(cache_dir) / f"footprint-{config_hash(unet_config)}.json"
    if path.exists():
        payload = json.loads(path.read_text())
        if payload.get("format") == _FOOTPRINT_FORMAT:
            from types import SimpleNamespace

            return SimpleNamespace(**payload["footprint"])
    from ldsbench.planning.footprint import cached_model_footprint

    return cached_model_footprint(unet_config, cache_dir)


def _training(config: dict, footprint, rule: str, jobs: int, steps: int) -> JobEstimate:
    batch = config["training"]["batch_size"]
    peak = PROCESS_BASE_BYTES + TRAINING_COPIES * footprint.model_params * FLOAT32 + batch * footprint.training_bytes_per_draw
    return JobEstimate(rule, jobs, peak, steps * batch, "training.batch_size")


def _forward_job(footprint, rule: str, jobs: int, forward_passes: float, batch: int) -> JobEstimate:
    peak = PROCESS_BASE_BYTES + footprint.model_params * FLOAT32 + batch * footprint.forward_bytes_per_draw
    return JobEstimate(rule, jobs, peak, 0, "runtime.memory_gb", forward_passes=forward_passes)


def measurement_passes(measurements: dict, n_queries: int) -> float:
    """Forward passes of measuring one model (every measurement)."""
    total = 0.0
    for settings in measurements.values():
        draws = settings.get("max_draws") or settings["draws"]
        if settings["type"] == "elbo":
            total += 2 * draws  # decoder and KL term
        elif settings["type"] == "log_likelihood":
            total += 3 * draws * ODE_EVALUATIONS  # a vector-Jacobian product per evaluation
        else:
            total += draws
    return total * n_queries


def measurement_batch(config: dict) -> int:
    """Draws per forward pass of a ``measure_model`` job."""
    n_queries = config["queries"]["generated"] + config["queries"]["heldout"]
    return min(MEASUREMENT_BATCH, n_queries * max(m.get("max_draws") or m["draws"] for m in config["measurements"].values()))


def scoring_estimate(method: dict, config: dict, footprint, budget_bytes: int, budget_setting: str) -> JobEstimate:
    """Peak and passes of one method's scoring job (every measurement). A method
    that cannot fit the budget at its smallest chunks gets the peak of those
    (above the budget, so the plan shows it and a run stops)."""
    try:
        return _scoring_estimate(method, config, footprint, budget_bytes, budget_setting)
    except MemoryBudgetError:
        return replace(
            _scoring_estimate(method, config, footprint, 2**62, budget_setting, smallest=True), setting=f"{budget_setting} (or the method's query_storage)"
        )


def _scoring_estimate(method: dict, config: dict, footprint, budget_bytes: int, budget_setting: str, smallest: bool = False) -> JobEstimate:
    runtime = config["runtime"]
    n_train, n_queries = config["dataset"]["n_train"], config["queries"]["generated"] + config["queries"]["heldout"]
    entry = method_type(method["type"])
    kind = entry.estimate
    # Methods whose query side follows the measurement stack one query set
    # per distinct query-side output function (``measurement_types.query_output_groups``).
    groups = len(query_output_groups({name: measurement_gradient_settings(m) for name, m in config["measurements"].items()}))
    if entry.query_follows_measurement(method):
        n_queries *= groups
    # A backward pass holds at most the method's draws per example.
    draws = max(method.get("train_draws", 1), method.get("query_draws", 1), method.get("draws_per_step", 1) * method.get("steps", 1))
    per_pass = min(runtime["gradient_draws_per_pass"], draws)
    values = 1 + len(method.get("damping_grid", method.get("lambda_grid", [])))
    if kind == "influence":
        sizes = method_sizes(footprint, "influence", per_pass)
        plan = choose_influence_chunking(
            budget_bytes,
            queries=n_queries,
            batch_examples=1 if smallest else min(32, n_train),
            setting=budget_setting,
            train=n_train,
            values=values,
            storage=method["query_storage"],
            **sizes,
        )
        if smallest:
            plan = replace(
                plan,
                chunks=n_queries,
                peak_bytes=influence_bytes(
                    queries=n_queries, queries_per_chunk=1, batch_examples=1, train=n_train, values=values, storage=method["query_storage"], **sizes
                ),
            )
        passes = plan.chunks * n_train * method["train_draws"] + n_queries * method["query_draws"]
        return JobEstimate("score_method", 1, plan.peak_bytes, passes, budget_setting)
    if kind == "iterative_influence":
        sizes = method_sizes(footprint, "influence", per_pass)
        draws = method["curvature"]["draws_per_example"]
        common = dict(queries=n_queries, train=n_train, values=values, ggn_draws=ggn_batch_draws(runtime["gradient_draws_per_pass"], draws), **sizes)
        if smallest:
            plan = GradientChunking(1, n_queries, 1, iterative_influence_bytes(queries_per_chunk=1, batch_examples=1, **common))
        else:
            plan = choose_iterative_influence_chunking(budget_bytes, batch_examples=min(32, n_train), setting=budget_setting, **common)
        # Per chunk and damping, at most max_iterations + 1 products with the
        # exact GGN (the start's residual and each iteration), each a pass over
        # its draws: one forward and backward pass shared by the chunk's
        # columns, and two backward passes per column (``iterative_solvers``).
        ggn_data = min(method["ggn_examples"] or n_train, n_train) * draws
        ggn_passes = values * (method["max_iterations"] + 1) * ggn_data * (plan.chunks + 2 * n_queries)
        passes = plan.chunks * n_train * method["train_draws"] + n_queries * method["query_draws"] + ggn_passes
        return JobEstimate("score_method", 1, plan.peak_bytes, passes, budget_setting)
    if kind == "projection":
        sizes = method_sizes(footprint, "projection", per_pass)
        cache = projection_cache_bytes(sizes["params"], method["projection_dim"], method.get("projection", "rademacher"))
        common = dict(dim=method["projection_dim"], queries=n_queries, train=n_train, values=values, projection_cache_bytes=cache, **sizes)
        largest = min(n_train, entry.largest_batch or TRAK_BATCH)
        batch = 1 if smallest else choose_projection_batch(budget_bytes, batch_examples=largest, setting=budget_setting, **common)
        members = method.get("models", 1)
        query_passes = n_queries * entry.query_draws(method)
        # Training features read from files are counted in their own jobs' rows.
        train_passes = 0 if entry.training_features else n_train * method["train_draws"]
        passes = members * (train_passes + query_passes) * entry.passes_per_draw
        return JobEstimate("score_method", 1, projected_feature_bytes(batch_examples=batch, **common), passes, budget_setting)
    if kind == "tracin":
        tracin = method_sizes(footprint, "tracin", per_pass)
        plan = choose_tracin_chunking(budget_bytes, queries=n_queries, setting=budget_setting, train=n_train, **tracin)
        if smallest:
            plan = replace(plan, chunks=n_queries, peak_bytes=tracin_bytes(queries=n_queries, queries_per_chunk=1, train=n_train, **tracin))
        training = config["training"]
        checkpoints = math.ceil(training["steps"] / training["checkpoint_every"])
        seen = training["steps"] * training["batch_size"]
        per_checkpoint = method.get("draws_per_checkpoint")
        train_passes = seen if per_checkpoint is None else min(seen, per_checkpoint * n_train * checkpoints)
        passes = plan.chunks * train_passes + checkpoints * n_queries * method["query_draws"]
        return JobEstimate("score_method", 1, plan.peak_bytes, passes, budget_setting)
    if kind == "nda":
        unet = config["model"]["unet"]
        peak = nda_bytes(
            train=n_train,
            queries=n_queries,
            channels=unet["in_channels"],
            side=unet["sample_size"],
            patch=method["patch"],
            kernel_batch=method["kernel_batch"],
            values=1 + len(method["timestep_grid"]),
            measurements=len(config["measurements"]),
        )
        # No network pass: convolutions of the images only (docs/methods.md, "NDA");
        # the job loads the model once and never differentiates it.
        return JobEstimate("score_method", 1, PROCESS_BASE_BYTES + footprint.model_params * FLOAT32 + peak, 0, budget_setting)
    if kind == "unlearning":
        # The Fisher (N fisher_draws single-draw backward passes) and the
        # reference losses once; per query and measurement group its gradient,
        # and per damping steps - 1 more and the training losses after.
        sizes = method_sizes(footprint, "unlearning", per_pass)
        value_bytes = FLOAT64 if method["dtype"] == "float64" else FLOAT32
        common = dict(queries=n_queries, train=n_train, values=values, value_bytes=value_bytes, **sizes)
        largest = max(MEASUREMENT_BATCH, method["eval_draws"])
        batch = 1 if smallest else choose_unlearning_batch(budget_bytes, batch_draws=largest, setting=budget_setting, **common)
        evaluation = n_train * method["eval_draws"]
        passes = n_train * method["fisher_draws"] + n_queries * (method["query_draws"] + values * (method["steps"] - 1) * method["query_draws"])
        forward = evaluation * (1 + n_queries * values)
        return JobEstimate("score_method", 1, unlearning_bytes(batch_draws=batch, **common), passes, budget_setting, forward_passes=forward)
    # Similarity and random: images and a [Q, N] score matrix per measurement.
    scores = (3 + len(config["measurements"])) * n_queries * n_train * FLOAT64
    return JobEstimate("score_method", 1, PROCESS_BASE_BYTES + 2 * footprint.model_params * FLOAT32 + scores, 0, budget_setting)


def curvature_estimate(curvature: dict, config: dict, footprint) -> JobEstimate:
    """One fit (``curvature_keys.curvature_fits``: factor settings and the
    ``kinds`` it serves): the model and a batch in the factors' dtype, the
    Kronecker factors with their eigenvectors (float64), and for EK-FAC the
    corrected eigenvalues and a second pass over the data."""
    ekfac = "ekfac" in curvature["kinds"]
    scale = 2 if curvature["dtype"] == "float64" else 1
    # A batch holds the draws of whole examples (ldsbench.attribution.curvature_data).
    draws = curvature["draws_per_example"]
    batch = min(config["dataset"]["n_train"], max(1, curvature["batch_size"] // draws)) * draws
    factors = 3 * footprint.kronecker_factor_values * FLOAT64 + (footprint.attributed_weights * FLOAT64 if ekfac else 0)
    peak = PROCESS_BASE_BYTES + scale * (2 * footprint.model_params * FLOAT32 + batch * footprint.training_bytes_per_draw) + factors
    data = config["dataset"]["n_train"] * curvature["draws_per_example"] * curvature["mc_samples"]
    passes = data * (2 if ekfac else 1)
    # A batch holds whole examples' draws: below draws_per_example, batch_size
    # no longer lowers the peak.
    return JobEstimate("fit_curvature", 1, peak, passes, "the curvature's batch_size (or draws_per_example)")


def feature_estimate(settings: dict, config: dict, footprint, budget_bytes: int, budget_setting: str) -> JobEstimate:
    """One projected-feature job (``projected_features``): peak at the
    largest training batch that fits, and one pass per training draw."""
    n_train = config["dataset"]["n_train"]
    sizes = feature_sizes(footprint, settings, n_train, config["runtime"]["gradient_draws_per_pass"])
    try:
        batch = choose_feature_batch(budget_bytes, setting=budget_setting, **sizes)
    except MemoryBudgetError:
        batch = 1
    return JobEstimate(
        "project_training_features", 1, projected_feature_bytes(batch_examples=batch, **sizes), n_train * settings["train_draws"], budget_setting
    )


def method_passes(name: str, config: dict, rows: dict[str, JobEstimate]) -> int:
    """What method ``name`` costs in passes: its scoring job's, plus every
    projected-feature job it reads (counted in full even when another
    method reads the same file), from the plan's rows keyed by rule."""
    method = config["methods"][name]
    features = sum(rows[f"project_training_features[{feature_key(s)}]"].step_equivalents for s in training_feature_sets(method))
    return int(rows[f"score_method[{name}]"].step_equivalents + features)


def rule_estimates(config: dict, footprint, budget_bytes: int, budget_setting: str) -> list[JobEstimate]:
    """One estimate per rule (per method for ``score_method``: several rows),
    for the config as validated (``config.validate_config``)."""
    training, bench, queries = config["training"], config["benchmark"], config["queries"]
    n_queries = queries["generated"] + queries["heldout"]
    methods, measurements = config["methods"], config["measurements"]
    ensemble = max([m.get("models", 1) for m in methods.values() if needs(m, "ensemble")] or [1])
    removal = config["removal"]
    removal_models = 0
    if removal["queries"]:
        rankers = len(removal["methods"]) + 1
        removal_models = len(removal["queries"]) * rankers * len(removal["fractions"]) * removal["seeds"]
    extra_seeds = max(ensemble, removal["seeds"] if removal["queries"] else 1) - 1
    models = bench["subsets"] * bench["seeds"]
    rows = [
        _training(config, footprint, "train_full_model", 1, training["steps"]),
        _training(config, footprint, "train_subset_model", bench["subsets"] * bench["seeds"], training["subset_steps"]),
        _forward_job(footprint, "generate_queries", 1, queries["generated"] * queries["sampling_steps"], min(256, max(1, queries["generated"]))),
        # One job per model measures every measurement.
        _forward_job(
            footprint,
            "measure_model",
            models,
            measurement_passes(measurements, n_queries),
            measurement_batch(config),
        ),
    ]
    # Rules a config may not use get a row of 0 jobs (every rule is declared).
    rows.append(_training(config, footprint, "train_full_model_seed", extra_seeds, training["steps"]))
    rows.append(_training(config, footprint, "train_removal_model", removal_models, training["steps"]))
    measured = {removal["measurement"]: measurements[removal["measurement"]]} if removal_models else {}
    removal_passes = measurement_passes(measured, len(removal["queries"]))
    removal_batch = min(MEASUREMENT_BATCH, max(1, int(removal_passes)))
    rows.append(_forward_job(footprint, "measure_removal_model", removal_models, removal_passes, removal_batch))
    rows.append(_forward_job(footprint, "measure_removal_reference", extra_seeds + 1 if removal_models else 0, removal_passes, removal_batch))
    tracing = any(needs(m, "trajectory") for m in methods.values())
    rows.append(_training(config, footprint, "trace_full_training", int(tracing), training["steps"]))
    for key, fit in curvature_fits(methods).items():
        estimate = curvature_estimate(fit, config, footprint)
        rows.append(replace(estimate, rule=f"fit_curvature[{key}]"))
    for key, settings in feature_sets(methods).items():
        estimate = feature_estimate(settings, config, footprint, budget_bytes, budget_setting)
        rows.append(replace(estimate, rule=f"project_training_features[{key}]"))
    for name, method in methods.items():
        estimate = scoring_estimate(method, config, footprint, budget_bytes, budget_setting)
        # One scoring job per method scores every measurement.
        rows.append(replace(estimate, rule=f"score_method[{name}]"))
    if config["model"].get("vae") is not None:
        rows += latent_estimates(config)
    return rows


def latent_estimates(config: dict) -> list[JobEstimate]:
    """Encoding the training and held-out images, and decoding the generated
    queries, with the VAE (``model.vae.batch_size`` images per pass)."""
    from ldsbench.data.latents import vae_config

    vae, queries = config["model"]["vae"], config["queries"]
    sizes = _vae_sizes(json.dumps(vae_config(vae["path"]), sort_keys=True), config["model"]["unet"]["sample_size"])
    batch, base = vae["batch_size"], PROCESS_BASE_BYTES + sizes.params * FLOAT32
    images = config["dataset"]["n_train"] + config["dataset"].get("n_heldout", 0)
    return [
        JobEstimate("encode_latents", 1, base + batch * sizes.encode_bytes_per_image, images, "model.vae.batch_size"),
        JobEstimate("decode_queries", 1, base + batch * sizes.decode_bytes_per_image, queries["generated"], "model.vae.batch_size"),
    ]


@functools.lru_cache(maxsize=4)
def _vae_sizes(config_json: str, latent_side: int):
    from ldsbench.planning.footprint import vae_footprint

    return vae_footprint(json.loads(config_json), latent_side)


def plan_table(rows: list[JobEstimate], rates: DeviceRates | None):
    """The plan as a pandas DataFrame: rule, jobs, peak_memory_gb, passes and
    forward_passes (per job), device_hours (all jobs, one at a time; NaN
    without rates)."""
    import pandas as pd

    rows = [r for r in rows if r.jobs]
    frame = pd.DataFrame(
        {
            "rule": [r.rule for r in rows],
            "jobs": [r.jobs for r in rows],
            "peak_memory_gb": [round(r.peak_bytes / GIB, 2) for r in rows],
            "passes": [int(r.passes) for r in rows],
            "forward_passes": [int(r.forward_passes) for r in rows],
            "device_hours": [rates.device_hours(r) if rates else math.nan for r in rows],
        }
    )
    return frame


def over_budget(rows: list[JobEstimate], budget_bytes: int, budget_setting: str) -> list[str]:
    """A line per rule whose estimated peak exceeds the budget."""
    return [
        f"{r.rule}: estimated peak {r.peak_bytes / GIB:.1f} GiB > {budget_setting} = {budget_bytes / GIB:.1f} GiB; lower {r.setting} or raise {budget_setting}"
        for r in rows
        if r.jobs and r.peak_bytes > budget_bytes
    ]


def job_budget(runtime: dict, device_type: str) -> tuple[int, str]:
    """(bytes, setting): the memory one job may use on a ``device_type``
    (``cpu`` or ``cuda``) device, from ``runtime.gpu_memory_gb`` on a GPU and
    ``runtime.memory_gb`` otherwise."""
    setting = "gpu_memory_gb" if device_type == "cuda" else "memory_gb"
    return int(float(runtime[setting]) * GIB), f"runtime.{setting}"
