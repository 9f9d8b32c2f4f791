"""Every method on one measurement: the cross-fitted tuned LDS (the headline),
the untuned default, two-way bootstrap intervals, the retraining ceiling,
noise-normalised LDS, the query-agnostic control and paired differences."""

import numpy as np
import pandas as pd

from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.measurement_comparison import compare_methods
from ldsbench.runtime.io import save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params, measurement = snakemake.params, snakemake.wildcards.measurement

truth_frame = pd.read_parquet(snakemake.input.ground_truth)
n_queries = truth_frame["query"].nunique()
truth_per_seed = ground_truth_array(truth_frame, params.n_subsets, params.n_seeds, n_queries)
methods = {}
for method, path in zip(params.methods, snakemake.input.predictions, strict=True):
    archive = np.load(path)
    methods[method] = (archive["values"], archive["predictions"])

result = compare_methods(methods, truth_per_seed, measurement, params.orientation, params.tuning, params.statistics)
save_parquet(snakemake.output.summary, result.summary)
save_parquet(snakemake.output.paired, result.paired)
save_parquet(snakemake.output.per_query, result.per_query)
log.info("%s: %d draws over subsets and queries, %d folds\n%s", measurement, params.statistics["resamples"], result.folds.n_folds, result.summary.to_string())
