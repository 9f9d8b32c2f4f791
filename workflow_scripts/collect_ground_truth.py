"""Concatenate the per-model measurements into one ground-truth table."""

import pandas as pd

from ldsbench.io import save_parquet
from ldsbench.jobs import start_job

log = start_job(snakemake)
frame = pd.concat([pd.read_parquet(path) for path in snakemake.input], ignore_index=True)
frame = frame.sort_values(["subset", "seed", "query"]).reset_index(drop=True)
save_parquet(snakemake.output[0], frame)
log.info("%s rows from %s models", len(frame), len(snakemake.input))
