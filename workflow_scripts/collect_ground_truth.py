"""Concatenate the per-model measurements into one ground-truth table,
checking that every model belongs to this benchmark (same data, queries,
settings, and the training rows of its subset)."""

import pandas as pd

from ldsbench.runtime.io import read_parquet_metadata, save_parquet
from ldsbench.runtime.jobs import start_job
from ldsbench.runtime.provenance import SHARED_KEYS, ArtifactMismatchError, check_compatible, rows_sha256, subsets_sha256

log = start_job(snakemake)
subsets = pd.read_parquet(snakemake.input.subsets)
expected_rows = {int(j): rows_sha256(group["train_index"]) for j, group in subsets.groupby("subset")}
frames, provenance = [], None
for path, (subset, seed) in zip(snakemake.input.measurements, snakemake.params.models, strict=True):
    frame, meta = pd.read_parquet(path), read_parquet_metadata(path)
    if set(frame["subset"]) != {subset} or set(frame["seed"]) != {seed}:
        raise ArtifactMismatchError(f"{path} holds the measurements of another model (subset {set(frame['subset'])}, seed {set(frame['seed'])})")
    if meta.get("train_rows_sha256") != expected_rows.get(subset):
        raise ArtifactMismatchError(f"{path}: its model was not trained on subset {subset} of {snakemake.input.subsets}; retrain it")
    shared = {k: v for k, v in meta.items() if k != "train_rows_sha256"}
    if provenance is None:
        provenance, first = shared, path
    check_compatible(provenance, shared, first, path, required=SHARED_KEYS)
    frames.append(frame)
frame = pd.concat(frames, ignore_index=True).sort_values(["subset", "seed", "query"]).reset_index(drop=True)
save_parquet(snakemake.output[0], frame, metadata={**provenance, "subsets_sha256": subsets_sha256(subsets)})
log.info("%s rows from %s models", len(frame), len(frames))
