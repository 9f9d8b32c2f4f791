"""`snakemake draw_precision`: per measurement and query, the Monte Carlo
share of the ground truth's spread between subsets, and the draws at which
its mean over queries is the target (``ldsbench.measurement.draw_precision``)."""

import numpy as np
import pandas as pd
import yaml

from ldsbench.measurement.draw_precision import precision_per_query, recommendation, recommended_measurements, share
from ldsbench.runtime.io import save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params = snakemake.params
archives = [np.load(path) for path in snakemake.input.replicates]
subsets, seeds = sorted({j for j, _ in params.models}), sorted({k for _, k in params.models})
frames, readings = [], []
for name in params.measurements:
    per_model = {model: archive[f"{name}.replicates"] for model, archive in zip(params.models, archives, strict=True)}
    # Every model's complete replicates (an adaptive measurement may stop some queries early).
    complete = min(int(np.isfinite(r).all(axis=0).sum()) for r in per_model.values())
    replicates = np.stack([np.stack([per_model[j, k][:, :complete] for k in seeds]) for j in subsets])
    per_query = precision_per_query(replicates)
    size = int(archives[0][f"{name}.replicate_size"])
    configured = params.configured_draws[name]
    reading = recommendation(per_query, size, configured, params.target_share)
    readings.append({"measurement": name, "pilot_subsets": len(subsets), "seeds": len(seeds), "pilot_draws": complete * size, **reading})
    per_query["share"] = share(per_query["monte_carlo_variance"], per_query["between_variance"], configured / size)
    frames.append(per_query.assign(measurement=name, replicate_size=size, pilot_replicates=complete))
    log.info("%s: %s", name, reading)
save_parquet(snakemake.output.per_query, pd.concat(frames, ignore_index=True))
table = pd.DataFrame(readings)
save_parquet(snakemake.output.summary, table)
text = 'Measurement draws for the LDS\'s precision (docs/evaluation.md, "How many measurement draws")\n\n' + table.to_string(index=False) + "\n"
with open(snakemake.output.table, "w") as handle:
    handle.write(text)
with open(snakemake.output.overlay, "w") as handle:
    handle.write(
        f"# The draws at which each measurement's mean Monte Carlo share is {params.target_share}\n"
        f"# (`snakemake draw_precision`, {len(subsets)} subsets x {len(seeds)} seeds; summary.md),\n"
        "# or the configured draws where summary.md has no recommended_draws.\n"
        "# Use them with: snakemake --configfile <your config> <this file> --replace-workflow-config ...\n"
        "# Every model is then measured again with these draws.\n" + yaml.safe_dump(recommended_measurements(table, params.configured_draws), sort_keys=False)
    )
print(text)
