"""What an artifact was computed from, and the checks that refuse artifacts
that do not belong together or were corrupted on disk.

Provenance is a flat dict of hashes:

* ``train_sha256``: the training set (pixels and labels).
* ``queries_sha256``: the query images.
* ``architecture_hash``: the UNet and noise-scheduler config.
* ``training_hash``: the training settings shared by the full and the subset
  models (everything but the number of steps).
* ``subsets_sha256``: the subset membership table (ground truth only).

Two artifacts are compatible when they agree on every key both carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldsbench.runtime.io import array_sha256, config_hash, file_sha256, save_json

STEP_KEYS = ("steps", "subset_steps")


class ArtifactMismatchError(RuntimeError):
    """Two inputs of one step were computed from different data or settings."""


class CorruptedArtifactError(RuntimeError):
    """A file's content no longer matches the checksum recorded when it was written."""


def architecture_hash(model_config: dict) -> str:
    return config_hash(model_config)


def training_hash(training_config: dict) -> str:
    """Hash of the training settings without the step counts, which differ
    between the full model and the subset models by design."""
    return config_hash({k: v for k, v in training_config.items() if k not in STEP_KEYS})


def queries_sha256(images: np.ndarray) -> str:
    return array_sha256(np.asarray(images, dtype=np.float32))


def subsets_sha256(frame) -> str:
    """Hash of the (subset, train_index) table, independent of row order."""
    ordered = frame.sort_values(["subset", "train_index"])
    return array_sha256(ordered["subset"].to_numpy(np.int64), ordered["train_index"].to_numpy(np.int64))


def rows_sha256(rows) -> str:
    """Hash of a set of training rows (sorted first)."""
    return array_sha256(np.sort(np.asarray(rows, dtype=np.int64)))


def model_provenance(manifest: dict) -> dict:
    """Provenance of a trained model from its ``manifest.json``."""
    missing = {"data_sha256", "architecture_hash", "training_hash"} - set(manifest)
    if missing:
        raise ArtifactMismatchError(f"model manifest lacks {sorted(missing)}: the model was written by an older version of this workflow; retrain it")
    return {
        "train_sha256": manifest["data_sha256"],
        "architecture_hash": manifest["architecture_hash"],
        "training_hash": manifest["training_hash"],
    }


SHARED_KEYS = ("train_sha256", "queries_sha256", "architecture_hash", "training_hash")


def check_compatible(first: dict, second: dict, first_name: str, second_name: str, required=()) -> None:
    """Raise, naming both artifacts and the differing fields, unless the two
    provenance dicts agree on every key both carry and both carry ``required``."""
    for provenance, name in ((first, first_name), (second, second_name)):
        missing = [k for k in required if k not in provenance]
        if missing:
            raise ArtifactMismatchError(f"{name} records no {missing}: it was written by an older version of this workflow; rerun its step")
    differing = sorted(k for k in set(first) & set(second) if first[k] != second[k])
    if differing:
        details = "; ".join(f"{k}: {first[k]} vs {second[k]}" for k in differing)
        raise ArtifactMismatchError(
            f"{first_name} and {second_name} do not belong together ({details}). "
            "They were computed from different data, queries or settings; rerun the stale one "
            "(`snakemake -n` shows what a run would rebuild)."
        )


def write_checksums(manifest_path, files: dict, provenance: dict) -> None:
    """Record the sha256 of each file in ``files`` ({role: path}) with the
    provenance, in a JSON manifest written after the files themselves."""
    checksums = {role: {"file": Path(path).name, "sha256": file_sha256(path)} for role, path in files.items()}
    save_json(manifest_path, {"files": checksums, "provenance": provenance})


def verify_checksums(manifest_path, files: dict) -> dict:
    """Check each file in ``files`` ({role: path}) against the manifest;
    return the manifest's provenance."""
    import json

    manifest = json.loads(Path(manifest_path).read_text())
    for role, path in files.items():
        expected = manifest["files"].get(role, {}).get("sha256")
        if expected is None:
            raise CorruptedArtifactError(f"{manifest_path} records no checksum for {path}")
        if file_sha256(path) != expected:
            raise CorruptedArtifactError(
                f"{path} does not match the checksum in {manifest_path}: the file was changed or corrupted "
                f"after it was written. Delete it and rerun its step (snakemake --forcerun on that file)."
            )
    return manifest["provenance"]
