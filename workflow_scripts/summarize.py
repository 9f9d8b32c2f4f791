"""Summary table, per-query table, sweep table and figures."""

import numpy as np
import pandas as pd

from ldsbench.io import atomic_path, save_parquet
from ldsbench.jobs import start_job
from ldsbench.lds import bootstrap_mean_ci
from ldsbench.plots import plot_lds_per_query, plot_lds_summary, plot_lds_vs_damping, summary_markdown
from ldsbench.tuning import tuned_results, tuning_split

log = start_job(snakemake)
per_query = pd.concat([pd.read_parquet(path) for path in snakemake.input.lds], ignore_index=True)
rows = []
for (method, measurement), group in per_query.groupby(["method", "measurement"], sort=False):
    stats = bootstrap_mean_ci(group["lds"].to_numpy())
    rows.append(
        {
            "method": method,
            "measurement": measurement,
            # As stored with the ground truth; the LDS itself never depends on it.
            "orientation": snakemake.params.orientation[measurement],
            "lds": stats["mean"],
            "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"],
            "n_queries": stats["n"],
            "n_subsets": snakemake.params.n_subsets,
            "n_seeds": snakemake.params.n_seeds,
        }
    )
summary = pd.DataFrame(rows)

# Damping chosen on the tuning queries, reported on the test queries.
sweep_per_query = pd.concat([pd.read_parquet(path) for path in snakemake.input.sweeps], ignore_index=True)
n_queries = int(per_query["query"].max()) + 1
tuning = tuning_split(n_queries, snakemake.params.tuning["fraction"], snakemake.params.tuning["seed"])
tuned = []
for row in summary.itertuples(index=False):
    group = sweep_per_query[(sweep_per_query["method"] == row.method) & (sweep_per_query["measurement"] == row.measurement)]
    if group.empty:  # the retraining ceiling has no hyperparameter and no sweep
        group = per_query[(per_query["method"] == row.method) & (per_query["measurement"] == row.measurement)].assign(damping=np.nan)
    default = snakemake.params.defaults.get(row.method)
    tuned.append(tuned_results(group, np.nan if default is None else default, tuning))
summary = pd.concat([summary, pd.DataFrame(tuned)], axis=1)

sweep_rows = []
for (method, measurement, damping), group in sweep_per_query.groupby(["method", "measurement", "damping"], sort=False):
    stats = bootstrap_mean_ci(group.sort_values("query")["lds"].to_numpy())
    sweep_rows.append(
        {"method": method, "measurement": measurement, "damping": damping, "lds": stats["mean"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"]}
    )
sweep = pd.DataFrame(sweep_rows)
save_parquet(snakemake.output.summary, summary)
save_parquet(snakemake.output.per_query, per_query)
save_parquet(snakemake.output.sweep, sweep)
with atomic_path(snakemake.output.plot) as tmp:
    plot_lds_summary(summary, tmp)
with atomic_path(snakemake.output.per_query_plot) as tmp:
    plot_lds_per_query(per_query, tmp)
with atomic_path(snakemake.output.sweep_plot) as tmp:
    plot_lds_vs_damping(sweep.dropna(subset=["damping"]), tmp)
with atomic_path(snakemake.output.table) as tmp:
    tmp.write_text(summary_markdown(summary))
log.info("\n%s", summary.to_string())
