"""Every method's LDS and the retraining ceiling in one results folder
against those of another folder of the same benchmark (the same data,
subsets, queries and methods; for example `runtime.precision: bf16` against
fp32, or compiled passes against eager ones), paired.

    .venv/bin/python benchmarks/paired_results.py --config config.yaml \
        --results results_bf16 --against results [--out paired.parquet]

Each folder's comparison is recomputed from its ground truth and prediction
files through the workflow's own `compare_methods`, with the same statistics
seed, so both use the same bootstrap draws over subsets and queries and the
same folds: each method's difference is taken draw by draw, and its interval
is the paired one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from ldsbench.evaluation.comparison import CROSS_FIT, interval
from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.measurement_comparison import compare_methods
from ldsbench.spec.config import validate_config
from ldsbench.spec.method_types import CEILING


def comparison(results: Path, config: dict, measurement: str):
    truth_frame = pd.read_parquet(results / "ground_truth" / f"{measurement}.parquet")
    benchmark = config["benchmark"]
    truth = ground_truth_array(truth_frame, benchmark["subsets"], benchmark["seeds"], truth_frame["query"].nunique())
    methods = {}
    for method in config["methods"]:
        archive = np.load(results / "lds" / method / f"{measurement}.predictions.npz")
        methods[method] = (archive["values"], archive["predictions"])
    orientation = truth_frame["orientation"].iloc[0]
    return compare_methods(methods, truth, measurement, orientation, config["tuning"], config["statistics"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the config both folders were run with (runtime keys aside)")
    parser.add_argument("--results", required=True, help="the folder compared")
    parser.add_argument("--against", required=True, help="the reference folder")
    parser.add_argument("--out", default=None, help="write the table here as parquet")
    args = parser.parse_args()
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    level = config["statistics"]["level"]
    rows = []
    for measurement in config["measurements"]:
        compared, reference = comparison(Path(args.results), config, measurement), comparison(Path(args.against), config, measurement)
        for method in [*config["methods"], CEILING]:
            key = ((method, "tuned"), CROSS_FIT) if method != CEILING else (CEILING, CROSS_FIT)
            draws = compared.bootstrap.draws[key] - reference.bootstrap.draws[key]
            low, high = interval(draws, level)
            rows.append(
                {
                    "measurement": measurement,
                    "method": method,
                    "lds": compared.bootstrap.point[key],
                    "reference_lds": reference.bootstrap.point[key],
                    "difference": compared.bootstrap.point[key] - reference.bootstrap.point[key],
                    "difference_ci_low": low,
                    "difference_ci_high": high,
                    "ci_half_width": float(np.subtract(*reversed(reference.bootstrap.interval(key, level))) / 2),
                }
            )
    table = pd.DataFrame(rows)
    table["significant"] = (table["difference_ci_low"] > 0) | (table["difference_ci_high"] < 0)
    if args.out:
        table.to_parquet(args.out, index=False)
    for measurement, group in table.groupby("measurement", sort=False):
        worst = group.loc[group["difference"].abs().idxmax()]
        print(
            f"{measurement}: largest |difference| {abs(worst['difference']):.3f} ({worst['method']}), "
            f"{int(group['significant'].sum())} of {len(group)} intervals exclude 0, mean CI half-width {group['ci_half_width'].mean():.3f}"
        )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
