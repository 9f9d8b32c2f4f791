"""Benchmark bundles: a trained and measured benchmark, packed so that a
method author can score methods against it without retraining (docs/bundles.md).

A bundle is a folder holding, at the same relative paths as in a results
folder, everything the scoring side of the workflow reads from the training
side (the training data, the queries, the subsets, the ground truth, the
full-data models the configured methods need), with ``manifest.json`` (the
full validated config, the benchmark's fingerprint, every file's sha256 and
size) and ``CARD.md`` (the protocol, its cost, who made it and how).

Torch-free: the workflow verifies a bundle while it parses, before any job.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ldsbench.runtime.io import file_sha256
from ldsbench.spec.datasets import dataset_type
from ldsbench.spec.feature_keys import full_model_name
from ldsbench.spec.method_types import needs

FORMAT = "ldsbench-bundle"
#: Raised when the manifest's layout changes; a reader refuses newer versions.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CARD = "CARD.md"
#: The config sections that decide the benchmark: in bundle mode they are the
#: bundle's, whatever the receiver's config says. methods, runtime, results
#: and report stay the receiver's; removal is turned off (it retrains).
PROTOCOL_SECTIONS = ("dataset", "model", "training", "benchmark", "queries", "measurements", "tuning", "statistics")


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupted or does not fit the config."""


@dataclass(frozen=True)
class BundleContents:
    """What a bundle of a config carries, as results-relative paths:
    ``files`` (single files), ``models`` (model folders, every file in them),
    and ``prepared``: files the receiver prepares from their own copy of the
    dataset (its licence forbids redistributing the images)."""

    files: tuple[str, ...]
    models: tuple[str, ...]
    prepared: tuple[str, ...] = field(default=())


def bundle_contents(config: dict) -> BundleContents:
    """The results-relative paths a bundle of validated ``config`` carries:
    what ``snakemake rescore`` reads of the training side for the configured
    methods (rules/guards.smk, RESCORE_INPUTS, and each scoring job's inputs)."""
    latent = config["model"].get("vae") is not None
    redistributable = not dataset_type(config["dataset"]["name"]).cifar
    if latent and not redistributable:
        raise BundleError(
            f"a latent-diffusion benchmark of {config['dataset']['name']} cannot be bundled: its images and latents may not be "
            "redistributed, and the receiver cannot encode them without retraining nothing (docs/bundles.md, Limitations)"
        )
    files = ["queries/queries.npz", "subsets.parquet", *(f"ground_truth/{name}.parquet" for name in sorted(config["measurements"]))]
    prepared = []
    if redistributable:
        files.insert(0, "data/train.npz")
    else:
        prepared.append("data/train.npz")
    if latent:
        # The figures show images: the training images and the queries as images.
        files += ["data/pixels/train.npz", "data/latents.json", "queries/images.npz"]
    models = ["full"]
    if any(needs(method, "trajectory") for method in config["methods"].values()):
        models.append("full_trajectory")
    members = max((method.get("models", 1) for method in config["methods"].values() if needs(method, "ensemble")), default=1)
    models += [full_model_name(seed) for seed in range(1, members)]
    return BundleContents(tuple(files), tuple(f"models/{name}" for name in models), tuple(prepared))


def list_files(root, contents: BundleContents) -> dict[str, dict]:
    """{results-relative path: {"sha256", "size"}} of every file of
    ``contents`` under ``root`` (model folders file by file), sorted."""
    root = Path(root)
    paths = list(contents.files)
    for model in contents.models:
        folder = root / model
        if not folder.is_dir():
            raise BundleError(f"{folder} does not exist: run `snakemake` (or the rule that writes it) first")
        # Snakemake's markers of a finished folder are its own, not the model's.
        paths += [p.relative_to(root).as_posix() for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".snakemake")]
    listing = {}
    for relative in sorted(paths):
        path = root / relative
        if not path.is_file():
            raise BundleError(f"{path} does not exist: run `snakemake` (or the rule that writes it) first")
        listing[relative] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return listing


def build_manifest(config: dict, files: dict, provenance: dict, fingerprint: str, prepared: dict, made: dict) -> dict:
    """The bundle's manifest (docs/bundles.md, "manifest.json"): ``files``
    from ``list_files``; ``prepared``: {path: what the receiver's copy must
    hash to}; ``made``: who made it and how (package_version, created,
    created_by, command)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **made,
        "benchmark_fingerprint": fingerprint,
        "provenance": provenance,
        "config": config,
        "files": files,
        "prepared": prepared,
    }


def read_manifest(bundle) -> dict:
    """The manifest of the bundle folder ``bundle``, after checking its format."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"bundle {bundle}: no {MANIFEST} (is it a bundle folder, written by `snakemake bundle`?)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"bundle {bundle}: {MANIFEST} is not valid JSON ({error}); the bundle is corrupted") from error
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {bundle}: {MANIFEST} is not a bundle manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(f"bundle {bundle}: format version {manifest['format_version']} is newer than this workflow reads ({FORMAT_VERSION}); update it")
    return manifest


def file_problem(bundle, relative: str, expected: dict) -> str | None:
    """Why the bundle's file ``relative`` does not match its manifest entry
    ``expected`` (None if it does): missing, another size, another sha256."""
    path = Path(bundle) / relative
    if not path.is_file():
        return f"{relative} is missing"
    size = path.stat().st_size
    if size != expected["size"]:
        return f"{relative} has {size} bytes, the manifest says {expected['size']}"
    if file_sha256(path) != expected["sha256"]:
        return f"{relative} does not match its sha256 in the manifest"
    return None


def verify_bundle(bundle) -> dict:
    """Check every file the manifest lists (size, then sha256) and return the
    manifest; raise BundleError naming the first bad or missing file."""
    manifest = read_manifest(bundle)
    for relative, expected in manifest["files"].items():
        problem = file_problem(bundle, relative, expected)
        if problem is not None:
            raise BundleError(f"bundle {bundle}: {problem}; the bundle is incomplete or corrupted, copy it again")
    return manifest


def bundle_config(user_config: dict, manifest: dict, compared=None) -> tuple[dict, list[str]]:
    """The config of a run in bundle mode: the receiver's, with the bundle's
    protocol sections (``PROTOCOL_SECTIONS``) and the removal branch off.
    Paths on the receiver's machine stay theirs: ``dataset.path`` (their copy
    of a dataset the bundle does not carry) and ``model.vae.path``. Returns
    the config (to validate) and the protocol sections it took whose value
    differs from the receiver's (``compared``: their config with its defaults
    filled, if it validates; absent sections count)."""
    config, compared = copy.deepcopy(dict(user_config)), user_config if compared is None else compared
    replaced = []
    for section in PROTOCOL_SECTIONS:
        bundled = manifest["config"].get(section)
        if bundled is None:
            continue
        if compared.get(section) != bundled:
            replaced.append(section)
        config[section] = copy.deepcopy(bundled)
    user_dataset, user_model = user_config.get("dataset") or {}, user_config.get("model") or {}
    if manifest.get("prepared") and user_dataset.get("path") is not None:
        config["dataset"]["path"] = user_dataset["path"]
    if config["model"].get("vae") is not None and (user_model.get("vae") or {}).get("path") is not None:
        config["model"]["vae"]["path"] = user_model["vae"]["path"]
    # The removal branch retrains models: never in bundle mode.
    config["removal"] = {"queries": []}
    return config, replaced


def missing_inputs(config: dict, manifest: dict) -> list[str]:
    """Model folders the receiver's methods read that the bundle does not
    carry (a method needing the trajectory, or a larger ensemble, than the
    producer's methods did)."""
    bundled = {relative.split("/")[1] for relative in manifest["files"] if relative.startswith("models/")}
    return [f"{model} (read by {', '.join(_readers(config, model))})" for model in bundle_contents(config).models if model.split("/")[1] not in bundled]


def _readers(config: dict, model: str) -> list[str]:
    name = model.split("/")[1]
    if name == "full":
        return ["every method"]
    if name == "full_trajectory":
        return [m for m, method in config["methods"].items() if needs(method, "trajectory")]
    seed = int(name.removeprefix("full_seed_"))
    return [m for m, method in config["methods"].items() if needs(method, "ensemble") and method.get("models", 1) > seed]


def entries(manifest: dict) -> dict[str, list[str]]:
    """The units a receiver's results folder gets from the bundle: each
    single file, and each model folder with its files ({unit: [files]})."""
    units: dict[str, list[str]] = {}
    for relative in manifest["files"]:
        parts = relative.split("/")
        unit = "/".join(parts[:2]) if parts[0] == "models" else relative
        units.setdefault(unit, []).append(relative)
    return units


def unpack(bundle, manifest: dict, unit: str, destination) -> None:
    """Copy the bundle's ``unit`` (a file or a model folder) to
    ``destination``, checking every copied file's sha256 against the
    manifest; the copy appears under its name only when complete."""
    destination = Path(destination)
    files = entries(manifest)[unit]
    tmp = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        for relative in files:
            target = tmp if relative == unit else tmp / Path(relative).relative_to(unit)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(bundle) / relative, target)
            if file_sha256(target) != manifest["files"][relative]["sha256"]:
                raise BundleError(f"bundle {bundle}: {relative} does not match its sha256 in the manifest; the bundle is corrupted, copy it again")
        _remove(destination)
        os.replace(tmp, destination)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def changed_files(old: dict, new: dict) -> list[str]:
    """Paths whose entry differs between two manifests' ``files`` (added,
    removed, or another checksum)."""
    return sorted(path for path in set(old) | set(new) if old.get(path) != new.get(path))


def write_bundle(results, destination, contents: BundleContents, manifest_of, card_of) -> dict:
    """Write the bundle of the results folder ``results`` to ``destination``
    atomically: files are copied into a temporary sibling folder, which is
    renamed into place last. ``manifest_of(files)`` builds the manifest from
    ``list_files``; ``card_of(manifest)`` the card. An existing bundle is
    replaced only if it lists the same files with the same checksums (a
    rewrite with a new date); otherwise BundleError names the differences."""
    results, destination = Path(results), Path(destination)
    files = list_files(results, contents)
    if destination.exists():
        old = read_manifest(destination)["files"] if (destination / MANIFEST).is_file() else {}
        changed = changed_files(old, files)
        if changed:
            raise BundleError(
                f"{destination} holds another bundle ({len(changed)} files differ, e.g. {', '.join(changed[:3])}); "
                "move or delete it first, or export with another `results:`"
            )
    tmp = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        for relative in files:
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / relative, target)
        # The copies, not the originals, are what the manifest vouches for.
        copied = list_files(tmp, BundleContents(tuple(files), ()))
        if copied != files:
            raise BundleError(f"{changed_files(files, copied)} changed while the bundle was written; export again")
        manifest = manifest_of(files)
        # Not key-sorted: the order of the measurements is the order of the tables.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / CARD).write_text(card_of(manifest))
        _remove(destination)
        os.replace(tmp, destination)
    finally:
        _remove(tmp)
    return manifest


def _total_bytes(files: dict) -> int:
    return sum(entry["size"] for entry in files.values())


def card_text(manifest: dict, cost: list[tuple[str, str]], ceiling: list[tuple[str, float]]) -> str:
    """CARD.md: the protocol, its cost (``cost``: (item, text) rows), the
    retraining ceiling (``ceiling``: (measurement, LDS) rows, may be empty),
    who made it and how."""
    config = manifest["config"]
    dataset, benchmark, queries, training = config["dataset"], config["benchmark"], config["queries"], config["training"]
    n_train = dataset["n_train"]
    lines = [
        "# Benchmark bundle",
        "",
        f"Benchmark fingerprint `{manifest['benchmark_fingerprint']}`; {len(manifest['files'])} files, "
        f"{_total_bytes(manifest['files']) / 1e6:.1f} MB. Score methods against it with "
        "`snakemake rescore --config bundle=PATH` (docs/bundles.md).",
        "",
        "## Protocol",
        "",
        f"- dataset: `{dataset['name']}`, N = {n_train} training examples (seed {dataset['seed']})"
        + ("" if not manifest.get("prepared") else "; not in the bundle: prepare it from your own copy (`dataset.path`)"),
        f"- model: UNet with block channels {config['model']['unet']['block_out_channels']}"
        + (", latent diffusion" if config["model"].get("vae") else ", pixel space"),
        f"- training: {training['steps']} steps for the full model, {training['subset_steps']} per subset model, batch {training['batch_size']}",
        f"- subsets: M = {benchmark['subsets']} random subsets of fraction {benchmark['fraction']:g} "
        f"({round(benchmark['fraction'] * n_train)} examples), K = {benchmark['seeds']} seeds each",
        f"- queries: {queries['generated']} generated ({queries['sampling_steps']} sampling steps) and {queries['heldout']} held out",
        "- measurements (ground truth with per-value standard errors):",
        *(f"  - `{name}`: {entry['type']}, {entry.get('draws')} draws per query" for name, entry in config["measurements"].items()),
        f"- tuning: {config['tuning']['folds']} folds; statistics: {config['statistics']['resamples']} bootstrap resamples",
        "",
        "## Cost",
        "",
        *(f"- {item}: {text}" for item, text in cost),
        "",
    ]
    if ceiling:
        lines += ["## Retraining ceiling", "", *(f"- `{name}`: LDS {value:.3f}" for name, value in ceiling), ""]
    lines += [
        "## Made",
        "",
        f"- by: {manifest.get('created_by') or 'unknown'}",
        f"- on: {manifest.get('created')}",
        f"- with: `{manifest.get('command')}`, ldsbench {manifest.get('package_version')}",
        "",
    ]
    return "\n".join(lines)


#: Benchmark folders of the jobs that made the benchmark (what a bundle saves
#: its receiver), with how the card names them.
PAID_STAGES = {"train": "training", "measure": "measuring", "curvature": "curvature fits", "features": "projected features"}


def measured_times(benchmarks) -> dict[str, tuple[int, float]]:
    """{stage: (jobs, wall seconds)} from the benchmark files (Snakemake's
    ``s`` column) of the stages in ``PAID_STAGES`` under ``benchmarks``."""
    import csv

    times = {}
    for folder, stage in PAID_STAGES.items():
        seconds = []
        for path in sorted(Path(benchmarks, folder).glob("*.tsv")):
            with open(path, newline="") as handle:
                seconds += [float(row["s"]) for row in csv.DictReader(handle, delimiter="\t")]
        if seconds:
            times[stage] = (len(seconds), sum(seconds))
    return times


def cost_rows(config: dict, plan_rows: list[dict], times: dict[str, tuple[int, float]]) -> list[tuple[str, str]]:
    """The card's cost lines: the retrainings, the plan's forward+backward
    passes of the training and measuring rules (``plan_rows``: the plan's
    ``JobEstimate`` fields) and the measured wall times (``measured_times``)."""
    training, benchmark = config["training"], config["benchmark"]
    models = benchmark["subsets"] * benchmark["seeds"]
    rows = [
        ("retrainings", f"{models} subset models of {training['subset_steps']} steps and the full model of {training['steps']}, batch {training['batch_size']}")
    ]
    for row in plan_rows:
        if row["rule"] in ("train_full_model", "train_full_model_seed", "train_subset_model", "trace_full_training", "measure_model"):
            rows.append((f"plan, {row['rule']}", f"{_jobs(row['jobs'])} of {row['passes']:.3g} forward+backward passes each"))
    rows += [(f"measured, {stage}", f"{_jobs(jobs)}, {seconds / 3600:.2f} h of wall time in all") for stage, (jobs, seconds) in times.items()]
    return rows


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"
