"""Changes of the measurement after retraining without each ranker's top
influences: per-model table, summary table and figure."""

import pandas as pd

from ldsbench.evaluation.removal import removal_changes, summarize_changes
from ldsbench.report.plots import plot_removal
from ldsbench.report.tables import removal_markdown
from ldsbench.runtime.io import atomic_path, save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params = snakemake.params
measured = pd.concat([pd.read_parquet(path) for path in snakemake.input.measured], ignore_index=True)
reference = pd.concat([pd.read_parquet(path) for path in snakemake.input.references], ignore_index=True)
changes = removal_changes(measured, reference)
summary = summarize_changes(changes)
summary.insert(0, "measurement", params.measurement)
summary.insert(1, "orientation", params.orientation)
unit = str(measured["unit"].iloc[0])
save_parquet(snakemake.output.changes, changes)
save_parquet(snakemake.output.summary, summary)
with atomic_path(snakemake.output.table) as tmp:
    tmp.write_text(removal_markdown(summary, unit))
with atomic_path(snakemake.output.plot) as tmp:
    plot_removal(summary, tmp, params.measurement, params.orientation, unit)
log.info("\n%s", summary.to_string())
