"""Summary table, per-query table, sweep table and figures."""

import pandas as pd

from ldsbench.io import atomic_path, save_parquet
from ldsbench.jobs import start_job
from ldsbench.lds import bootstrap_mean_ci
from ldsbench.plots import plot_lds_summary, plot_lds_vs_damping, summary_markdown

log = start_job(snakemake)
per_query = pd.concat([pd.read_parquet(path) for path in snakemake.input.lds], ignore_index=True)
rows = []
for (method, measurement), group in per_query.groupby(["method", "measurement"], sort=False):
    stats = bootstrap_mean_ci(group["lds"].to_numpy())
    rows.append(
        {
            "method": method,
            "measurement": measurement,
            "lds": stats["mean"],
            "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"],
            "n_queries": stats["n"],
            "n_subsets": snakemake.params.n_subsets,
            "n_seeds": snakemake.params.n_seeds,
        }
    )
summary = pd.DataFrame(rows)
sweep = pd.concat([pd.read_parquet(path) for path in snakemake.input.sweeps], ignore_index=True)
save_parquet(snakemake.output.summary, summary)
save_parquet(snakemake.output.per_query, per_query)
save_parquet(snakemake.output.sweep, sweep)
with atomic_path(snakemake.output.plot) as tmp:
    plot_lds_summary(summary, tmp)
with atomic_path(snakemake.output.sweep_plot) as tmp:
    plot_lds_vs_damping(sweep.dropna(subset=["damping"]), tmp)
with atomic_path(snakemake.output.table) as tmp:
    tmp.write_text(summary_markdown(summary))
log.info("\n%s", summary.to_string())
