"""Summary table, paired differences, per-query table, sweep table and figures."""

import pandas as pd

from ldsbench.report.plots import plot_lds_per_query, plot_lds_summary, plot_lds_vs_value, plot_paired_differences
from ldsbench.report.tables import ordered_summary, paired_markdown, per_query_table, summary_markdown, sweep_table
from ldsbench.runtime.io import atomic_path, save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params, inputs, outputs = snakemake.params, snakemake.input, snakemake.output

# One row per method and measurement (the ceiling last), methods in config order.
summary = ordered_summary(pd.concat([pd.read_parquet(path) for path in inputs.comparisons], ignore_index=True), params.methods, params.measurements)
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
per_query = per_query_table([pd.read_parquet(path) for path in inputs.tuned_per_query], [pd.read_parquet(path) for path in inputs.lds])
# The sweep figure's intervals resample queries only.
sweep = sweep_table(pd.concat([pd.read_parquet(path) for path in inputs.sweeps], ignore_index=True))

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
