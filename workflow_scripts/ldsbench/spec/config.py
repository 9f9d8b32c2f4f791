"""Validating the workflow config before any job runs.

Errors name the offending key as a dotted path (``methods.trak.lambda``) so a
user can fix the file without reading a traceback.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import jsonschema
import yaml

from ldsbench.spec.datasets import DATASET_TYPES, block_type_errors, dataset_type, size_errors, source_errors, unet_input_errors
from ldsbench.spec.measurement_types import MEASUREMENT_TYPES, NOT_A_QUALITY_MEASURE, measurement_type, orientation_of
from ldsbench.spec.method_types import METHOD_TYPES, RESERVED_NAMES, method_type
from ldsbench.spec.output_functions import OUTPUT_FUNCTIONS
from ldsbench.spec.schema import SCHEMA_PATH

_NUMBER_LIKE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


class ConfigError(ValueError):
    """The config is invalid; the message names every offending key."""


def load_schema(path=SCHEMA_PATH) -> dict:
    """The config schema, with each registered method type's block
    (``$defs/{type}_method``) and each measurement type's block
    (``$defs/{type}_measurement``) dispatched on ``type``."""
    schema = yaml.safe_load(Path(path).read_text())
    for section, suffix, types in (("methods", "method", METHOD_TYPES), ("measurements", "measurement", MEASUREMENT_TYPES)):
        missing = [name for name in types if f"{name}_{suffix}" not in schema["$defs"]]
        if missing:
            raise ValueError(f"{path}: no $defs block for {suffix} type(s) {missing} (expected $defs/<type>_{suffix})")
        entry = schema["properties"][section]["additionalProperties"]
        entry["properties"] = {"type": {"enum": list(types)}}
        entry["allOf"] = [
            {"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": {"$ref": f"#/$defs/{name}_{suffix}"}} for name in types
        ]
    # The dataset names are the registry's (spec.datasets).
    schema["properties"]["dataset"]["properties"]["name"] = {"enum": list(DATASET_TYPES)}
    # The named output functions are one table (spec.output_functions).
    schema["$defs"]["trak_method"]["properties"]["output_fn"] = {"enum": list(OUTPUT_FUNCTIONS)}
    # A method type's gradient layout defaults to its authors' (the registry's recipe).
    for name, entry in METHOD_TYPES.items():
        properties = schema["$defs"][f"{name}_method"]["properties"]
        if "gradient_draws" in properties:
            if entry.recipe is None or entry.recipe.gradient_draws is None:
                raise ValueError(f"method type {name}: its schema block has gradient_draws, but its registry entry declares no authors' layout")
            properties["gradient_draws"] = {**properties["gradient_draws"], "default": dict(entry.recipe.gradient_draws)}
    return schema


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _number_like_strings(node, path=()):
    """YAML 1.1 reads 1e-3 (no dot) as a string; find such values."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _number_like_strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _number_like_strings(value, (*path, index))
    elif isinstance(node, str) and _NUMBER_LIKE.match(node):
        yield path, node


def _non_finite_numbers(node, path=()):
    """NaN and infinities (YAML's .nan, .inf, -.inf) anywhere, as (path, what):
    the schema's minimum and maximum comparisons are all False for NaN. No
    setting takes infinity for "unbounded" (none in the schema or the shipped
    configs; a huge training.grad_clip is no clipping)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, float) and not math.isfinite(key):
                yield (*path, key), f"the key {key!r}"
            yield from _non_finite_numbers(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _non_finite_numbers(value, (*path, index))
    elif isinstance(node, float) and not math.isfinite(node):
        yield path, repr(node)


def _referenced(schema: dict, root: dict) -> dict:
    """The schema that ``schema``'s ``$ref`` points to ({} without one)."""
    if "$ref" not in schema:
        return {}
    target = root
    for part in schema["$ref"].lstrip("#/").split("/"):
        target = target[part]
    return target


def _fill_defaults(node, schema: dict, root: dict):
    """Fill ``default`` values of object properties, following $ref and the
    if/then rules used for method types."""
    if "$ref" in schema:
        return _fill_defaults(node, _referenced(schema, root), root)
    if not isinstance(node, dict):
        return node
    for rule in schema.get("allOf", []):
        condition = rule["if"]["properties"]
        if all(node.get(k) == v.get("const") for k, v in condition.items()):
            _fill_defaults(node, rule["then"], root)
    for key, sub in schema.get("properties", {}).items():
        # A shared $defs entry holds its default once; a property may override it.
        default = {**_referenced(sub, root), **sub}
        if key not in node and "default" in default:
            node[key] = copy.deepcopy(default["default"])
        if key in node:
            _fill_defaults(node[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in node:
            if key not in schema.get("properties", {}):
                _fill_defaults(node[key], extra, root)
    return node


#: A rank correlation needs at least this many subsets in every tuning fold
#: (``evaluation.tuning``).
MIN_SUBSETS_PER_FOLD = 2


def _fill_levels(config: dict) -> None:
    """Copy the dataset's number of grey levels into the likelihood
    measurements that do not set ``levels``, so that it is part of their
    settings (and of their jobs' params)."""
    levels = dataset_type(config["dataset"]["name"]).levels
    if levels is None:
        return
    for entry in config["measurements"].values():
        if measurement_type(entry["type"]).needs_levels and "levels" not in entry:
            entry["levels"] = levels
    if config["training"].get("dequantise") and "levels" not in config["training"]:
        config["training"]["levels"] = levels


def _training_errors(config: dict) -> list[str]:
    """Dequantised training needs the data's grey levels, and only it uses them."""
    training, dataset_levels = config["training"], dataset_type(config["dataset"]["name"]).levels
    if not training.get("dequantise"):
        if "levels" in training:
            return ["training.levels: only used with training.dequantise: true, which is not set"]
        return []
    if "levels" not in training:
        return [f"training.levels: required with training.dequantise for dataset {config['dataset']['name']!r} (its number of grey levels)"]
    if dataset_levels is not None and training["levels"] != dataset_levels:
        return [f"training.levels: {training['levels']} but dataset {config['dataset']['name']!r} has {dataset_levels} grey levels"]
    return []


def _measurement_errors(config: dict) -> list[str]:
    """Measurement settings the schema cannot check: draws that fill whole
    replicates, timesteps within the schedule, levels matching the data."""
    errors = []
    num_timesteps = config["model"]["scheduler"]["num_train_timesteps"]
    dataset_levels = dataset_type(config["dataset"]["name"]).levels
    for name, entry in config["measurements"].items():
        key = f"measurements.{name}"
        replicate = entry.get("strata", 1) * (2 if entry.get("antithetic") else 1)
        if entry["draws"] % replicate or entry["draws"] // replicate < 2:
            errors.append(
                f"{key}.draws: {entry['draws']} must be a multiple of strata x (2 if antithetic) = {replicate} "
                "with at least 2 replicates (the standard error is computed from replicates)"
            )
        if entry["target_stderr"] is not None and entry["max_draws"] is None:
            errors.append(f"{key}.max_draws: required with target_stderr (the cap on draws per query)")
        if entry["max_draws"] is not None:
            if entry["target_stderr"] is None:
                errors.append(f"{key}.max_draws: only used with target_stderr, which is not set")
            elif entry["max_draws"] < entry["draws"] or entry["max_draws"] % replicate:
                errors.append(f"{key}.max_draws: {entry['max_draws']} must be >= draws ({entry['draws']}) and a multiple of {replicate}")
        if entry["type"] == "loss_at_t" and entry["timestep"] >= num_timesteps:
            errors.append(f"{key}.timestep: {entry['timestep']} is not below model.scheduler.num_train_timesteps {num_timesteps}")
        if measurement_type(entry["type"]).needs_levels:
            if "levels" not in entry:
                errors.append(f"{key}.levels: required for dataset {config['dataset']['name']!r} (its number of grey levels)")
            elif dataset_levels is not None and entry["levels"] != dataset_levels:
                errors.append(f"{key}.levels: {entry['levels']} but dataset {config['dataset']['name']!r} has {dataset_levels} grey levels")
        if entry["type"] == "elbo" and num_timesteps < 2:
            errors.append(f"{key}: the ELBO needs model.scheduler.num_train_timesteps >= 2")
    return errors


def _query_count(config: dict) -> int:
    return config["queries"]["generated"] + config["queries"]["heldout"]


def _fill_removal_methods(config: dict) -> None:
    """``removal.methods: null`` means every method that is not random."""
    removal = config["removal"]
    if removal.get("methods") is None:
        removal["methods"] = [name for name, method in config["methods"].items() if method_type(method["type"]).ranks_for_removal]


def _removal_errors(config: dict) -> list[str]:
    """The retraining-without-top-influences branch: known names, queries
    that exist, and a measurement with a direction of improvement."""
    removal = config["removal"]
    if not removal["queries"]:
        return []
    errors = []
    measurement = removal.get("measurement")
    if measurement is None:
        errors.append("removal.measurement: required when removal.queries is set (a key of measurements)")
    elif measurement not in config["measurements"]:
        errors.append(f"removal.measurement: {measurement!r} is not a key of measurements ({', '.join(config['measurements'])})")
    elif orientation_of(config["measurements"][measurement]) == NOT_A_QUALITY_MEASURE:
        errors.append(
            f"removal.measurement: {measurement!r} is not a quality measure, so no training example 'supports' "
            "a query under it; pick a lower- or higher-is-better measurement"
        )
    reserved = sorted(set(RESERVED_NAMES) & set(config["methods"]))
    if reserved:
        errors.append(f"methods: {reserved} are reserved names of the benchmark's own rows; rename the method")
    n_queries = _query_count(config)
    for query in removal["queries"]:
        if query >= n_queries:
            errors.append(f"removal.queries: {query} is not a query row (the benchmark has {n_queries} queries)")
    for method in removal["methods"]:
        if method not in config["methods"]:
            errors.append(f"removal.methods: {method!r} is not a key of methods ({', '.join(config['methods'])})")
        elif not method_type(config["methods"][method]["type"]).ranks_for_removal:
            errors.append(f"removal.methods: {method!r} ranks no training example (the removal branch has its own random control)")
    if not removal["methods"]:
        errors.append("removal.methods: no method to rank training examples with")
    n_train = config["dataset"]["n_train"]
    for fraction in removal["fractions"]:
        if round(fraction * n_train) < 1:
            errors.append(f"removal.fractions: {fraction} x dataset.n_train {n_train} removes no example")
    if len({round(f * n_train) for f in removal["fractions"]}) < len(removal["fractions"]):
        errors.append(f"removal.fractions: {removal['fractions']} remove the same number of examples from {n_train}")
    return errors


def _report_errors(config: dict) -> list[str]:
    report, errors = config["report"], []
    n_queries = _query_count(config)
    for query in report["grid_queries"]:
        if query >= n_queries:
            errors.append(f"report.grid_queries: {query} is not a query row (the benchmark has {n_queries} queries)")
    if report["grid_measurement"] is not None and report["grid_measurement"] not in config["measurements"]:
        errors.append(f"report.grid_measurement: {report['grid_measurement']!r} is not a key of measurements")
    if 2 * report["grid_examples"] > config["dataset"]["n_train"]:
        errors.append(f"report.grid_examples: {report['grid_examples']} most positive and negative exceed dataset.n_train")
    return errors


def _tuning_errors(config: dict) -> list[str]:
    folds, errors = config["tuning"]["folds"], []
    n_queries, n_subsets = _query_count(config), config["benchmark"]["subsets"]
    if n_queries < folds:
        errors.append(f"tuning.folds: {folds} folds of {n_queries} queries leave a fold without a query (lower tuning.folds or add queries)")
    if n_subsets // folds < MIN_SUBSETS_PER_FOLD:
        errors.append(
            f"tuning.folds: {folds} folds of benchmark.subsets = {n_subsets} leave {n_subsets // folds} subsets in the smallest fold;"
            f" each needs at least {MIN_SUBSETS_PER_FOLD} (raise benchmark.subsets or lower tuning.folds)"
        )
    return errors


def _draw_precision_errors(config: dict) -> list[str]:
    pilot, n_subsets = config["draw_precision"]["pilot_subsets"], config["benchmark"]["subsets"]
    if pilot is not None and pilot > n_subsets:
        return [f"draw_precision.pilot_subsets: {pilot} is more than benchmark.subsets = {n_subsets}"]
    return []


def _method_errors(config: dict) -> list[str]:
    """Antithetic gradient draws in pairs, and each method type's own check
    (``methods.MethodType.check``)."""
    errors = []
    for name, method in config["methods"].items():
        if method.get("gradient_draws", {}).get("antithetic"):
            for key in ("train_draws", "query_draws"):
                if method.get(key, 0) % 2:
                    errors.append(f"methods.{name}.{key}: {method[key]} is odd; antithetic gradient draws come in (eps, -eps) pairs")
        check = method_type(method["type"]).check
        if check is not None:
            errors += check(name, method, config)
    return errors


def _latent_errors(config: dict) -> list[str]:
    """With ``model.vae``: the VAE folder, and a UNet, scheduler and
    measurements that fit its latents (``latents``)."""
    model = config["model"]
    if model.get("vae") is None:
        return []
    from ldsbench.data.latents import image_shape_errors
    from ldsbench.spec.latent_config import vae_errors

    errors = vae_errors(model["vae"], model["unet"], model["scheduler"], config["measurements"], config["training"])
    name = config["dataset"]["name"]
    if not dataset_type(name).local:
        errors += image_shape_errors(model["vae"], model["unet"], *dataset_type(name).image_shape, f"{name} images")
    return errors


def _builtin_dataset_errors(config: dict) -> list[str]:
    """digits, cifar2, cifar10: no more images than the dataset holds, and
    without ``model.vae`` a UNet that takes its images (with one,
    ``_latent_errors`` checks the VAE's fit)."""
    name = config["dataset"]["name"]
    if dataset_type(name).local:
        return []
    errors = size_errors(config["dataset"])
    if config["model"].get("vae") is None:
        errors += unet_input_errors(name, config["model"]["unet"], *dataset_type(name).image_shape)
    return errors


def _semantic_errors(config: dict) -> list[str]:
    """Checks the schema cannot express."""
    errors = []
    n_train, fraction = config["dataset"]["n_train"], config["benchmark"]["fraction"]
    size = round(fraction * n_train)
    if not 1 <= size < n_train:
        errors.append(f"benchmark.fraction: {fraction} x dataset.n_train {n_train} gives subsets of {size} examples; need 1..{n_train - 1}")
    unet = config["model"]["unet"]
    if len(unet["down_block_types"]) != len(unet["block_out_channels"]) or len(unet["up_block_types"]) != len(unet["block_out_channels"]):
        errors.append("model.unet: down_block_types, up_block_types and block_out_channels must have the same length")
    errors += block_type_errors(unet)
    groups = unet.get("norm_num_groups", 32)
    for channels in unet["block_out_channels"]:
        if channels % groups:
            errors.append(f"model.unet.norm_num_groups: {groups} does not divide block_out_channels entry {channels}")
    queries = config["queries"]
    if queries["generated"] + queries["heldout"] < 1:
        errors.append("queries: generated + heldout must be at least 1")
    if queries["heldout"] > config["dataset"].get("n_heldout", 0):
        errors.append(f"queries.heldout: {queries['heldout']} exceeds dataset.n_heldout {config['dataset'].get('n_heldout', 0)}")
    source = dataset_type(config["dataset"]["name"])
    if source.cifar:
        from ldsbench.data.image_sets import check_cifar10_path

        try:
            check_cifar10_path(config["dataset"].get("path"))
        except FileNotFoundError as error:
            errors.append(str(error))
    for key in ("image_size", "channels"):
        if config["dataset"].get(key) is not None and not source.local:
            errors.append(f"dataset.{key}: only for dataset.name folder or arrays, not {config['dataset']['name']}")
    if source.local:
        if config["dataset"].get("path") is None:
            errors.append(f'dataset.path: required for dataset.name {config["dataset"]["name"]} (docs/datasets.md, "Your own data")')
        else:
            errors += source_errors(config["dataset"], unet, config["model"].get("vae"))
    errors += _latent_errors(config)
    errors += _builtin_dataset_errors(config)
    errors += _measurement_errors(config)
    errors += _training_errors(config)
    errors += _tuning_errors(config)
    errors += _draw_precision_errors(config)
    for name, method in config["methods"].items():
        if method.get("modules") is not None:
            try:
                re.compile(method["modules"])
            except re.error as error:
                errors.append(f"methods.{name}.modules: {method['modules']!r} is not a regular expression ({error})")
    errors += _method_errors(config)
    errors += _removal_errors(config)
    errors += _report_errors(config)
    return errors


def _canonical(node):
    """Recursively key-sorted copy. Snakemake's params trigger compares
    ``repr`` strings, so without this, reordering keys in a config file would
    look like a changed parameter and rerun (for example) every training."""
    if isinstance(node, dict):
        return {key: _canonical(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return node


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled, in canonical
    key order (``methods`` and ``measurements`` keep the user's order, which is
    the order of tables and figures).

    Raises ConfigError listing every problem, each with its dotted key.
    """
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    # `--config confirm_retraining=true` arrives as the string "true"
    # (Snakemake parses only Python literals such as True).
    flag = config.get("confirm_retraining")
    if isinstance(flag, str) and flag.lower() in ("true", "false"):
        config["confirm_retraining"] = flag.lower() == "true"
    problems = [
        f"{_dotted(path)}: {value!r} is a string; YAML reads numbers in exponent notation "
        f"without a decimal point as text, write e.g. {float(value)!r} or {value.replace('e', '.0e', 1) if '.' not in value else value}"
        for path, value in _number_like_strings(config)
    ]
    problems += [f"{_dotted(path)}: {what} is not a finite number" for path, what in _non_finite_numbers(config)]
    if not problems:
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
            problems.append(f"{_dotted(error.absolute_path)}: {error.message}")
    if not problems:
        _fill_defaults(config, schema, schema)
        _fill_levels(config)
        _fill_removal_methods(config)
        if config["report"]["grid_queries"] is None:
            config["report"]["grid_queries"] = list(range(min(3, _query_count(config))))
        if config["report"]["grid_measurement"] is None:
            config["report"]["grid_measurement"] = next(iter(config["measurements"]))
        problems = _semantic_errors(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    canonical = _canonical(config)
    for section in ("methods", "measurements"):
        canonical[section] = {name: _canonical(config[section][name]) for name in config[section]}
    return canonical
