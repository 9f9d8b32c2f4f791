"""Every method's LDS and the retraining ceiling with fewer measurement
draws, against those of all the configured draws, from a finished results
folder whose every model the pilot measured (`snakemake draw_precision` with
`draw_precision.pilot_subsets` = `benchmark.subsets`).

    .venv/bin/python benchmarks/draw_precision.py --config config.yaml [--results results]

For each measurement and each count r of replicates (powers of two below the
configured count): the ground truth from every model's first r replicates,
which is what measuring with r replicates' draws gives; every method's
tuned (cross-fitted) LDS and the ceiling through the workflow's own
comparison, on the same bootstrap draws; each one's paired difference from
its value at all the draws, with its interval; and the Monte Carlo share
the pilot predicts at r (``ldsbench.measurement.draw_precision``).
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
from ldsbench.evaluation.measurement_comparison import compare_methods
from ldsbench.measurement.draw_precision import precision_per_query, share
from ldsbench.spec.config import validate_config
from ldsbench.spec.method_types import CEILING


def replicates_of(results: Path, measurement: str, subsets: int, seeds: int) -> np.ndarray:
    """[M, K, Q, R] replicate means of every model."""
    folder = results / "draw_precision" / "replicates"
    return np.stack([np.stack([np.load(folder / f"subset_{j}_seed_{k}.npz")[f"{measurement}.replicates"] for k in range(seeds)]) for j in range(subsets)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the config the results folder was run with")
    parser.add_argument("--results", default=None, help="results folder (default: the config's `results`)")
    parser.add_argument("--out", default=None, help="write the table here as parquet")
    args = parser.parse_args()
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    results = Path(args.results or config["results"])
    subsets, seeds = config["benchmark"]["subsets"], config["benchmark"]["seeds"]
    level = config["statistics"]["level"]
    rows = []
    for measurement in sorted(config["measurements"]):
        replicates = replicates_of(results, measurement, subsets, seeds)
        full = replicates.shape[-1]
        pilot = precision_per_query(replicates)
        resolved = pilot["between_variance"] > 0
        size = config["measurements"][measurement]["draws"] // full
        methods = {}
        for method in config["methods"]:
            archive = np.load(results / "lds" / method / f"{measurement}.predictions.npz")
            methods[method] = (archive["values"], archive["predictions"])
        orientation = pd.read_parquet(results / "ground_truth" / f"{measurement}.parquet")["orientation"].iloc[0]

        def comparison(r):
            truth_per_seed = replicates[..., :r].mean(axis=-1).transpose(1, 0, 2)  # [K, M, Q]
            return compare_methods(methods, truth_per_seed, measurement, orientation, config["tuning"], config["statistics"])

        reference = comparison(full)
        counts = sorted({2**i for i in range(int(np.log2(full)) + 1) if 2**i < full} | {full})
        for r in counts:
            result = reference if r == full else comparison(r)
            predicted = float(share(pilot.loc[resolved, "monte_carlo_variance"], pilot.loc[resolved, "between_variance"], r).mean())
            for method in [*config["methods"], CEILING]:
                key = ((method, "tuned"), CROSS_FIT) if method != CEILING else (CEILING, CROSS_FIT)
                point = result.bootstrap.point[key]
                low, high = result.bootstrap.interval(key, level)
                difference = point - reference.bootstrap.point[key]
                diff_low, diff_high = interval(result.bootstrap.draws[key] - reference.bootstrap.draws[key], level)
                rows.append(
                    {
                        "measurement": measurement,
                        "replicates": r,
                        "draws": r * size,
                        "predicted_share": predicted,
                        "method": method,
                        "lds": point,
                        "ci_low": low,
                        "ci_high": high,
                        "difference": difference,
                        "difference_ci_low": diff_low,
                        "difference_ci_high": diff_high,
                    }
                )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_parquet(args.out, index=False)
    pd.set_option("display.width", 200)
    for (measurement, draws), group in table.groupby(["measurement", "draws"], sort=False):
        half = ((group["ci_high"] - group["ci_low"]) / 2).mean()
        worst = group.loc[group["difference"].abs().idxmax()]
        print(
            f"{measurement}, {draws} draws (predicted mean share {group['predicted_share'].iloc[0]:.3f}): "
            f"largest |difference| {abs(worst['difference']):.3f} ({worst['method']}), mean CI half-width {half:.3f}"
        )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
