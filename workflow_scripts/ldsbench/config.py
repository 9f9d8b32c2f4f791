"""Validating the workflow config before any job runs.

Errors name the offending key as a dotted path (``methods.trak.lambda``) so a
user can fix the file without reading a traceback.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
_NUMBER_LIKE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


class ConfigError(ValueError):
    """The config is invalid; the message names every offending key."""


def load_schema(path=SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


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


def _fill_defaults(node, schema: dict, root: dict):
    """Fill ``default`` values of object properties, following $ref and the
    if/then rules used for method types."""
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _fill_defaults(node, target, root)
    if not isinstance(node, dict):
        return node
    for rule in schema.get("allOf", []):
        condition = rule["if"]["properties"]
        if all(node.get(k) == v.get("const") for k, v in condition.items()):
            _fill_defaults(node, rule["then"], root)
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            _fill_defaults(node[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in node:
            if key not in schema.get("properties", {}):
                _fill_defaults(node[key], extra, root)
    return node


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
    groups = unet.get("norm_num_groups", 32)
    for channels in unet["block_out_channels"]:
        if channels % groups:
            errors.append(f"model.unet.norm_num_groups: {groups} does not divide block_out_channels entry {channels}")
    queries = config["queries"]
    if queries["generated"] + queries["heldout"] < 1:
        errors.append("queries: generated + heldout must be at least 1")
    if queries["heldout"] > config["dataset"].get("n_heldout", 0):
        errors.append(f"queries.heldout: {queries['heldout']} exceeds dataset.n_heldout {config['dataset'].get('n_heldout', 0)}")
    if config["dataset"]["name"] == "cifar2":
        from .data import check_cifar10_path

        try:
            check_cifar10_path(config["dataset"].get("path"))
        except FileNotFoundError as error:
            errors.append(str(error))
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
    problems = [
        f"{_dotted(path)}: {value!r} is a string; YAML reads numbers in exponent notation "
        f"without a decimal point as text, write e.g. {float(value)!r} or {value.replace('e', '.0e', 1) if '.' not in value else value}"
        for path, value in _number_like_strings(config)
    ]
    if not problems:
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
            problems.append(f"{_dotted(error.absolute_path)}: {error.message}")
    if not problems:
        _fill_defaults(config, schema, schema)
        problems = _semantic_errors(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    canonical = _canonical(config)
    for section in ("methods", "measurements"):
        canonical[section] = {name: _canonical(config[section][name]) for name in config[section]}
    return canonical
