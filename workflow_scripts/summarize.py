"""Summary table, paired differences, per-query table, sweep table and figures."""

import pandas as pd

from ldsbench.evaluation.lds import bootstrap_mean_ci
from ldsbench.report.plots import SWEEP_COLUMNS, plot_lds_per_query, plot_lds_summary, plot_lds_vs_value, plot_paired_differences
from ldsbench.report.tables import paired_markdown, summary_markdown
from ldsbench.runtime.io import atomic_path, save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params, inputs, outputs = snakemake.params, snakemake.input, snakemake.output

# One row per method and measurement (the ceiling last), methods in config order.
summary = pd.concat([pd.read_parquet(path) for path in inputs.comparisons], ignore_index=True)
order = {name: k for k, name in enumerate([*params.methods, *sorted(set(summary["method"]) - set(params.methods))])}
summary = summary.sort_values(
    ["method", "measurement"], key=lambda col: col.map(order) if col.name == "method" else col.map(params.measurements.index), kind="stable"
)
summary = summary.reset_index(drop=True)
# What each method cost: the gradient passes of its scoring job and the
# feature jobs it reads (the plan's estimate, every measurement together)
# and their measured wall time (a shared feature job counts for each of its
# readers). The time goes into the Markdown table only, so that the results
# files stay bitwise reproducible.
seconds = {method: sum(float(pd.read_csv(path, sep="\t")["s"].iloc[0]) for path in params.time_files[method]) for method in params.methods}
summary["gradient_passes"] = summary["method"].map(params.gradient_passes)
paired = pd.concat([pd.read_parquet(path) for path in inputs.paired], ignore_index=True)
# Per query: the cross-fitted tuned LDS behind the headline, and the untuned
# default's over all subsets.
per_query = pd.concat(
    [
        *(pd.read_parquet(path).assign(values="tuned") for path in inputs.tuned_per_query),
        *(pd.read_parquet(path).assign(values="default") for path in inputs.lds),
    ],
    ignore_index=True,
)

# The sweep figure's intervals resample queries only (one per value would
# multiply the comparison's bootstrap by the grid size); the summary's
# tuned and untuned values carry the two-way intervals.
sweep_per_query = pd.concat([pd.read_parquet(path) for path in inputs.sweeps], ignore_index=True)
sweep_rows = []
for (method, measurement, hyperparameter, value), group in sweep_per_query.groupby(["method", "measurement", "hyperparameter", "value"], sort=False):
    stats = bootstrap_mean_ci(group.sort_values("query")["lds"].to_numpy())
    sweep_rows.append(
        {
            "method": method,
            "measurement": measurement,
            "hyperparameter": hyperparameter,
            "value": value,
            "lds": stats["mean"],
            "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"],
        }
    )
sweep = pd.DataFrame(sweep_rows, columns=SWEEP_COLUMNS)

save_parquet(outputs.summary, summary)
save_parquet(outputs.paired, paired)
save_parquet(outputs.per_query, per_query)
save_parquet(outputs.sweep, sweep)
with atomic_path(outputs.plot) as tmp:
    plot_lds_summary(summary, tmp)
with atomic_path(outputs.paired_plot) as tmp:
    plot_paired_differences(paired[paired["values"] == "tuned"], tmp, values="tuned by cross-fitting")
with atomic_path(outputs.per_query_plot) as tmp:
    plot_lds_per_query(per_query[per_query["values"] == "tuned"], tmp)
with atomic_path(outputs.sweep_plot) as tmp:
    plot_lds_vs_value(sweep.dropna(subset=["value"]), tmp)
with atomic_path(outputs.table) as tmp:
    shown = summary.assign(scoring_seconds=summary["method"].map(seconds))
    tmp.write_text(summary_markdown(shown) + "\n" + paired_markdown(summary, paired, params.level))
log.info("\n%s", summary.to_string())
