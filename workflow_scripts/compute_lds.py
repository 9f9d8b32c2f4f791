"""LDS of one method for one measurement, per query and over its sweep."""

import numpy as np
import pandas as pd

from ldsbench.io import read_parquet_metadata, save_parquet
from ldsbench.jobs import start_job
from ldsbench.lds import bootstrap_mean_ci, ground_truth_array, lds_per_query
from ldsbench.provenance import SHARED_KEYS, check_compatible, subsets_sha256, verify_checksums
from ldsbench.subsets import subsets_from_frame

log = start_job(snakemake)
w, inputs = snakemake.wildcards, snakemake.input
# Refuse corrupted files and artifacts of another benchmark before computing anything.
score_provenance = verify_checksums(inputs.manifest, {"scores": inputs.scores, "sweep": inputs.sweep})
truth_provenance = read_parquet_metadata(inputs.ground_truth)
subsets_frame = pd.read_parquet(inputs.subsets)
check_compatible(score_provenance, truth_provenance, inputs.scores, inputs.ground_truth, required=SHARED_KEYS)
check_compatible({"subsets_sha256": subsets_sha256(subsets_frame)}, truth_provenance, inputs.subsets, inputs.ground_truth, required=["subsets_sha256"])

scores = np.load(snakemake.input.scores)
truth_frame = pd.read_parquet(snakemake.input.ground_truth)
n_queries = truth_frame["query"].nunique()
if scores.shape[0] != n_queries:
    raise ValueError(f"{snakemake.input.scores} has {scores.shape[0]} queries but the ground truth has {n_queries}; they come from different query sets")
mask = subsets_from_frame(subsets_frame, scores.shape[1])
if mask.shape[0] != snakemake.params.n_subsets:
    raise ValueError(f"{snakemake.input.subsets} holds {mask.shape[0]} subsets but benchmark.subsets is {snakemake.params.n_subsets}")
# Raises, naming what is missing, unless every (subset, seed, query) is present.
truth = ground_truth_array(truth_frame, snakemake.params.n_subsets, snakemake.params.n_seeds, n_queries).mean(axis=0)

per_query = lds_per_query(scores, mask, truth)
save_parquet(snakemake.output.per_query, pd.DataFrame({"method": w.method, "measurement": w.measurement, "query": np.arange(n_queries), "lds": per_query}))

# Per-query LDS of every damping (or lambda) evaluated, for the sweep figure
# and for tuning on a split of the queries.
sweep = np.load(snakemake.input.sweep)
frames = []
for value, grid_scores in zip(sweep["values"], [scores, *sweep["scores"]]):
    lds = lds_per_query(grid_scores, mask, truth)
    frames.append(pd.DataFrame({"method": w.method, "measurement": w.measurement, "damping": float(value), "query": np.arange(n_queries), "lds": lds}))
    log.info("LDS %s at %s: %.4f", w.method, value, bootstrap_mean_ci(lds)["mean"])
save_parquet(snakemake.output.sweep, pd.concat(frames, ignore_index=True))
