"""LDS of one method for every measurement, per query and over its sweep, and
the group predictions of every swept value for the comparison of methods."""

import numpy as np
import pandas as pd

from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.lds import bootstrap_mean_ci
from ldsbench.evaluation.method_lds import check_score_files, check_scores, method_lds, subset_mask
from ldsbench.runtime.io import atomic_path, save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
w, inputs, params = snakemake.wildcards, snakemake.input, snakemake.params
subsets_frame = pd.read_parquet(inputs.subsets)


def measurement_lds(name, scores_path, sweep_path, manifest_path, truth_path, per_query_path, sweep_out, predictions_out):
    check_score_files(scores_path, sweep_path, manifest_path, truth_path, subsets_frame, inputs.subsets)
    scores = np.load(scores_path)
    truth_frame = pd.read_parquet(truth_path)
    n_queries = truth_frame["query"].nunique()
    # Non-finite scores are kept: the queries they touch get no LDS.
    check_scores(scores, n_queries, scores_path, finite=False)
    mask = subset_mask(subsets_frame, scores.shape[1], params.n_subsets, inputs.subsets)
    # Raises, naming what is missing, unless every (subset, seed, query) is present.
    truth = ground_truth_array(truth_frame, params.n_subsets, params.n_seeds, n_queries).mean(axis=0)

    sweep = np.load(sweep_path)
    result = method_lds(w.method, name, params.hyperparameter, sweep["values"], [scores, *sweep["scores"]], mask, truth)
    with atomic_path(predictions_out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, values=result.values, predictions=result.predictions)
    save_parquet(per_query_path, result.per_query)
    save_parquet(sweep_out, result.sweep)
    for value, group in result.sweep.groupby("value", sort=False, dropna=False):
        log.info("LDS %s on %s at %s: %.4f", w.method, name, value, bootstrap_mean_ci(group["lds"].to_numpy())["mean"])


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
