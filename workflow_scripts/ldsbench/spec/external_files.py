"""Checks, before any job, of the files a method brings from outside the
package (torch-free): an external method's Python file and a score file
computed by another library (docs/external-methods.md).

Paths are relative to the working directory (where ``snakemake`` runs), as
every other path in the config.
"""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import numpy as np

#: Score file formats (``type: scores_file``): each holds the matrix and the
#: benchmark fingerprint it scores (``runtime.fingerprints.benchmark_fingerprint``).
SCORE_FILE_FORMATS = {
    ".npz": "arrays `scores` and `benchmark` (np.savez)",
    ".pt": "a dict {'scores': tensor, 'benchmark': str} (torch.save)",
    ".npy": "the matrix (np.save), with the fingerprint in a JSON file beside it: {'benchmark': ...} in <name>.json",
}
#: How a score file lays out its matrix: [Q, N] (the benchmark's) or [N, Q] (dattri's ``lds`` takes [N, Q]).
LAYOUTS = ("query_by_train", "train_by_query")


def external_method_errors(method: dict) -> list[str]:
    """Problems of an external method's file (keys relative to the method):
    it exists, parses, and defines its scorer at top level."""
    path = Path(method["path"])
    if path.suffix != ".py":
        return [f"path: {path} is not a Python file (.py)"]
    if not path.is_file():
        return [f"path: {path} does not exist (relative paths are from the working directory, {Path.cwd()})"]
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        return [f"path: {path} does not parse: {error.msg} at line {error.lineno}"]
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    if method["scorer"] not in defined:
        functions = sorted(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
        return [f"scorer: {path} defines no top-level {method['scorer']!r} (its functions: {', '.join(functions) or 'none'})"]
    return []


def score_file_paths(method: dict, measurements: list[str]) -> dict[str, str]:
    """{measurement: score file} of a ``scores_file`` method: one ``path`` for
    every measurement, or a mapping from measurement names (missing ones absent)."""
    path = method["path"]
    if isinstance(path, str):
        return dict.fromkeys(measurements, path)
    return {name: path[name] for name in measurements if name in path}


def fingerprint_file(path) -> Path:
    """The JSON file beside a ``.npy`` score file that names its benchmark."""
    return Path(path).with_suffix(".json")


def stored_shape(path) -> tuple[int, ...] | None:
    """The matrix's shape from a ``.npy`` or ``.npz`` file's header (None for ``.pt``)."""
    path = Path(path)
    if path.suffix == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape)
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as archive, archive.open("scores.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(handle)
        return tuple(shape)
    return None


def expected_shape(layout: str, n_queries: int, n_train: int) -> tuple[int, int]:
    return (n_queries, n_train) if layout == "query_by_train" else (n_train, n_queries)


def score_file_errors(method: dict, measurements: list[str], n_queries: int | None = None, n_train: int | None = None) -> list[str]:
    """Problems of a ``scores_file`` method's files (keys relative to the
    method): one file per measurement, of a known format, that names its
    benchmark and (where the header tells, and sizes are given) has the shape
    its ``layout`` says. The benchmark itself is checked by the scoring job,
    which knows the full model and the queries."""
    paths = score_file_paths(method, measurements)
    errors = [f"path: no score file for measurement {name!r} (give one path, or one per measurement)" for name in measurements if name not in paths]
    if not isinstance(method["path"], str):
        errors += [f"path.{name}: {name!r} is not a configured measurement ({', '.join(measurements)})" for name in method["path"] if name not in measurements]
    # Each file once (one path may serve every measurement), under the key that names it.
    keys: dict[str, str] = {}
    for name, path in paths.items():
        keys.setdefault(path, "path" if isinstance(method["path"], str) else f"path.{name}")
    for path, key in keys.items():
        path = Path(path)
        if path.suffix not in SCORE_FILE_FORMATS:
            errors.append(f"{key}: {path} is not one of {', '.join(SCORE_FILE_FORMATS)}")
            continue
        if not path.is_file():
            errors.append(f"{key}: {path} does not exist (relative paths are from the working directory, {Path.cwd()})")
            continue
        if path.suffix == ".npy" and not fingerprint_file(path).is_file():
            errors.append(f'{key}: {path} needs {fingerprint_file(path)} naming its benchmark ({{"benchmark": "..."}}; docs/external-methods.md)')
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                missing = {"scores.npy", "benchmark.npy"} - set(archive.namelist())
            if missing:
                errors.append(f"{key}: {path} lacks {sorted(m.removesuffix('.npy') for m in missing)}; it needs arrays `scores` and `benchmark`")
                continue
        if n_queries is not None and n_train is not None:
            shape = stored_shape(path)
            if shape is not None:
                errors += [f"{key}: {error}" for error in shape_errors(path, shape, method["layout"], n_queries, n_train)]
    return errors


def shape_errors(path, shape: tuple[int, ...], layout: str, n_queries: int, n_train: int) -> list[str]:
    """A message if a matrix of ``shape`` is not [Q, N] (or [N, Q]) as ``layout`` says."""
    expected = expected_shape(layout, n_queries, n_train)
    if tuple(shape) == expected:
        return []
    other = LAYOUTS[1 - LAYOUTS.index(layout)]
    if tuple(shape) == expected_shape(other, n_queries, n_train):
        return [f"{path} has shape {list(shape)}, which is layout {other}, but the method says layout: {layout}"]
    return [f"{path} has shape {list(shape)}; layout {layout} of {n_queries} queries and {n_train} training examples is {list(expected)}"]


def read_fingerprint_sidecar(path) -> str:
    """The benchmark named by a ``.npy`` score file's JSON file."""
    return str(json.loads(fingerprint_file(path).read_text())["benchmark"])
