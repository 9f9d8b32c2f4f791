"""Where the config schema lives, and the defaults of its blocks.

Torch-free and free of the method registry, so that modules whose code
decides scores (``measurement``) can read a block's defaults without their
code hash following the registry. ``config.load_schema`` adds the type
dispatch on top of the raw file.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "config.schema.yaml"


@functools.cache
def _raw_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def defs_enum(name: str, key: str | None = None) -> tuple:
    """The values of the shared enum ``$defs/{name}`` (with ``key``: of its property ``key``)."""
    entry = _raw_schema()["$defs"][name]
    return tuple((entry if key is None else entry["properties"][key])["enum"])


def block_defaults(block: str) -> dict:
    """``{key: default}`` of the properties of ``$defs/{block}`` that have one
    (a fresh copy: callers may change it)."""
    properties = _raw_schema()["$defs"][block]["properties"]
    return {key: copy.deepcopy(value["default"]) for key, value in properties.items() if "default" in value}


def section_defaults(section: str) -> dict:
    """``{key: default}`` of the properties of the top-level section ``section`` that have one."""
    properties = _raw_schema()["properties"][section]["properties"]
    return {key: copy.deepcopy(value["default"]) for key, value in properties.items() if "default" in value}
