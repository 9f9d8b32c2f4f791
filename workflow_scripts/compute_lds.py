"""LDS of one method for every measurement, per query and over its sweep, and
the group predictions of every swept value for the comparison of methods."""

import numpy as np
import pandas as pd

from ldsbench.data.subsets import subsets_from_frame
from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.lds import bootstrap_mean_ci, group_predictions, spearman_per_query
from ldsbench.runtime.io import atomic_path, read_parquet_metadata, save_parquet
from ldsbench.runtime.jobs import start_job
from ldsbench.runtime.provenance import SHARED_KEYS, check_compatible, subsets_sha256, verify_checksums

log = start_job(snakemake)
w, inputs, params = snakemake.wildcards, snakemake.input, snakemake.params
subsets_frame = pd.read_parquet(inputs.subsets)


def measurement_lds(name, scores_path, sweep_path, manifest_path, truth_path, per_query_path, sweep_out, predictions_out):
    # Refuse corrupted files and artifacts of another benchmark before computing anything.
    score_provenance = verify_checksums(manifest_path, {"scores": scores_path, "sweep": sweep_path})
    truth_provenance = read_parquet_metadata(truth_path)
    check_compatible(score_provenance, truth_provenance, scores_path, truth_path, required=SHARED_KEYS)
    check_compatible({"subsets_sha256": subsets_sha256(subsets_frame)}, truth_provenance, inputs.subsets, truth_path, required=["subsets_sha256"])

    scores = np.load(scores_path)
    truth_frame = pd.read_parquet(truth_path)
    n_queries = truth_frame["query"].nunique()
    if scores.shape[0] != n_queries:
        raise ValueError(f"{scores_path} has {scores.shape[0]} queries but the ground truth has {n_queries}; they come from different query sets")
    mask = subsets_from_frame(subsets_frame, scores.shape[1])
    if mask.shape[0] != params.n_subsets:
        raise ValueError(f"{inputs.subsets} holds {mask.shape[0]} subsets but benchmark.subsets is {params.n_subsets}")
    # Raises, naming what is missing, unless every (subset, seed, query) is present.
    truth = ground_truth_array(truth_frame, params.n_subsets, params.n_seeds, n_queries).mean(axis=0)

    # Every value's group predictions [L, M, Q], the reported value first; the
    # comparison of methods resamples subsets and queries from them.
    sweep = np.load(sweep_path)
    values = np.asarray(sweep["values"], dtype=np.float64)
    predictions = np.stack([group_predictions(grid_scores, mask) for grid_scores in [scores, *sweep["scores"]]])
    with atomic_path(predictions_out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, values=values, predictions=predictions)

    per_query = spearman_per_query(predictions[0], truth)
    save_parquet(per_query_path, pd.DataFrame({"method": w.method, "measurement": name, "query": np.arange(n_queries), "lds": per_query}))

    # Per-query LDS of every damping (or lambda) evaluated, for the sweep figure.
    frames = []
    for value, grid_predictions in zip(values, predictions, strict=True):
        lds = spearman_per_query(grid_predictions, truth)
        frames.append(
            pd.DataFrame(
                {
                    "method": w.method,
                    "measurement": name,
                    "hyperparameter": params.hyperparameter,
                    "value": float(value),
                    "query": np.arange(n_queries),
                    "lds": lds,
                }
            )
        )
        log.info("LDS %s on %s at %s: %.4f", w.method, name, value, bootstrap_mean_ci(lds)["mean"])
    save_parquet(sweep_out, pd.concat(frames, ignore_index=True))


for row in zip(
    params.measurements,
    inputs.scores,
    inputs.sweeps,
    inputs.manifests,
    inputs.ground_truth,
    snakemake.output.per_query,
    snakemake.output.sweeps,
    snakemake.output.predictions,
    strict=True,
):
    measurement_lds(*row)
