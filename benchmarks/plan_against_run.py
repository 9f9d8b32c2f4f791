"""The plan's device-hours per rule against the time its jobs took in a
finished results folder (their Snakemake benchmark files), so the plan's
cost model can be checked on the machine that ran them.

    .venv/bin/snakemake plan                       # writes results/plan.tsv (calibrating first)
    .venv/bin/python benchmarks/plan_against_run.py [--results results]

Only rules whose jobs the plan counts passes for are compared: training,
measuring, features, curvature and scoring. The plan's hours are one job
at a time at the calibrated rates; the measured ones are the sum of the
jobs' wall-clock seconds, which include each job's start-up (loading
torch, the model, the data) and any contention from jobs run beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

# Where each compared rule writes its benchmark files, under results/benchmarks/
# (the rules' `benchmark:` paths in rules/*.smk).
BENCHMARK_FILES = {
    "train_full_model": "train/full.tsv",
    "train_full_model_seed": "train/full_seed_*.tsv",
    "train_subset_model": "train/subset_*.tsv",
    "trace_full_training": "train/full_trajectory.tsv",
    "measure_model": "measure/*.tsv",
    "project_training_features": "features/*.tsv",
    "fit_curvature": "curvature/*.tsv",
    "score_method": "scores/*.tsv",
}


def measured_hours(results: Path) -> pd.DataFrame:
    rows = []
    for rule, pattern in BENCHMARK_FILES.items():
        files = sorted((results / "benchmarks").glob(pattern))
        seconds = sum(pd.read_csv(f, sep="\t")["s"].iloc[0] for f in files)
        rows.append({"rule": rule, "measured_jobs": len(files), "measured_hours": seconds / 3600})
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results")
    args = parser.parse_args()
    results = Path(args.results)
    plan = pd.read_csv(results / "plan.tsv", sep="\t")
    plan["rule"] = plan["rule"].str.split("[").str[0]  # "score_method[trak]" is a score_method job
    plan = plan.groupby("rule", as_index=False).agg(planned_jobs=("jobs", "sum"), planned_hours=("device_hours", "sum"))
    table = measured_hours(results).merge(plan, on="rule", how="left")
    table = table[table["measured_jobs"] > 0]
    table["measured_over_planned"] = table["measured_hours"] / table["planned_hours"]
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    total = table[["measured_hours", "planned_hours"]].sum()
    print(f"all compared rules: measured {total['measured_hours']:.3g} h, planned {total['planned_hours']:.3g} h")


if __name__ == "__main__":
    main()
