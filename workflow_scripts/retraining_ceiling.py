"""Exact-retraining ceiling: each seed's ground truth against the others' mean."""

import numpy as np
import pandas as pd

from ldsbench.io import save_parquet
from ldsbench.jobs import start_job
from ldsbench.lds import ground_truth_array, retraining_ceiling_per_query

log = start_job(snakemake)
frame = pd.read_parquet(snakemake.input.ground_truth)
truth = ground_truth_array(frame, frame["subset"].nunique(), frame["seed"].nunique(), frame["query"].nunique())
per_query = retraining_ceiling_per_query(truth)
measurement = snakemake.wildcards.measurement
save_parquet(
    snakemake.output.per_query,
    pd.DataFrame({"method": "retraining_ceiling", "measurement": measurement, "query": np.arange(len(per_query)), "lds": per_query}),
)
log.info("ceiling mean %.4f", np.nanmean(per_query))
