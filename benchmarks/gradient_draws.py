"""Monte Carlo noise of attribution scores under each layout of gradient draws.

    .venv/bin/python benchmarks/gradient_draws.py                      # on a finished default run in results/
    .venv/bin/python benchmarks/gradient_draws.py --methods ekfac_influence trak --budgets 16 64

For every method (influence, TRAK/D-TRAK, DAS entries of the config), every
layout of the (t, eps) draws (``methods.GRADIENT_LAYOUTS``) and every draw
budget (train_draws = query_draws), the method is scored twice on the full
model, with two independent draw seeds and nothing else changed (the
random projection, the curvature and the hyperparameter stay fixed).
The hyperparameter is the method's tuned value in the finished run's
``lds_summary.parquet`` (the value most cross-fitting cells chose on the
``--measurement``; at the untuned default the TRAK family's kernel is at
its interpolating end, where its scores are noisiest), or ``--untuned``.
Printed per row, on the ``--measurement``'s query side:

- retest: the scores' test-retest correlation, the mean over queries of the
  Pearson correlation across training examples between the two runs (1: no
  Monte Carlo noise left; it needs no ground truth);
- seconds: wall time of one scoring, i.e. the cost of that draw budget;
- residual_retest (DAS only): the Pearson correlation across training
  examples of the per-example RMS residual r_i between the two runs (the
  scalar variants multiply every score of example i by r_i, squared for
  ``form: distance``).

How each layout ranks subsets, honestly tuned, is ``benchmarks/layout_ablation.py``.
Needs a finished run of the config (models, curvature, queries, summary).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ldsbench.attribution.curvature import KroneckerEigenbasis
from ldsbench.data.image_sets import load_image_set
from ldsbench.diffusion.noise import GradientDraws
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.methods.das import das_scores, rms_residuals, train_stream
from ldsbench.methods.influence import stacked_influence_scores
from ldsbench.methods.trak import stacked_trak_scores
from ldsbench.runtime.jobs import load_model
from ldsbench.spec.config import validate_config
from ldsbench.spec.curvature_keys import curvature_key
from ldsbench.spec.method_types import GRADIENT_LAYOUTS, default_value


def score(name, method, inputs, measurement, layout, draws, seed, value):
    """[Q, N] scores of config entry ``method`` at hyperparameter ``value``,
    with ``draws`` train and query draws in ``layout`` under draw seed ``seed``."""
    unet, scheduler, train, queries, results = inputs
    value = [value]
    if method["type"] == "influence":
        basis = KroneckerEigenbasis.load(results / "curvature" / f"{curvature_key(method['curvature'])}.pt", method["curvature"]["kind"])
        return stacked_influence_scores(
            unet,
            scheduler,
            train,
            queries,
            basis,
            value,
            query_fns=[measurement_output_fn(measurement)],
            train_draws=GradientDraws.of(draws, layout),
            query_draws=GradientDraws.of(draws, layout),
            seed=seed,
        )[0]
    if method["type"] == "trak":
        return stacked_trak_scores(
            unet,
            scheduler,
            train,
            queries,
            value,
            measurements=[measurement],
            output_fn=method["output_fn"],
            projection_dim=method["projection_dim"],
            projection_seed=method["seed"],
            train_draws=GradientDraws.of(draws, layout),
            query_draws=GradientDraws.of(draws, layout),
            seed=seed,
            projection=method["projection"],
            lambda_scale=method["lambda_scale"],
        )[0]
    if method["type"] == "das":
        return das_scores(
            unet,
            scheduler,
            train,
            queries,
            value,
            measurement=measurement,
            output=method["output"],
            form=method["form"],
            output_directions=method["output_directions"],
            projection_dim=method["projection_dim"],
            projection_seed=method["seed"],
            train_draws=draws,
            query_draws=draws,
            seed=seed,
            gradient_draws=layout,
            lambda_scale=method["lambda_scale"],
        )[0]
    raise SystemExit(f"methods.{name}: type {method['type']} is not one of influence, trak, das")


def retest(first: np.ndarray, second: np.ndarray) -> float:
    """Mean over queries of the Pearson correlation across training examples."""
    a = first - first.mean(axis=1, keepdims=True)
    b = second - second.mean(axis=1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))))


def residual_retest(method, inputs, layout, draws) -> float:
    """DAS's scalar variants: the retest correlation of r_i across examples (NaN otherwise)."""
    if method["type"] != "das" or method["output"] == "jacobian":
        return float("nan")
    unet, scheduler, train, _, _ = inputs
    plan = GradientDraws.of(draws, layout)
    runs = [rms_residuals(unet, scheduler, train, plan, train_stream(seed, method["output"], plan)).numpy() for seed in (0, 1)]
    return float(np.corrcoef(*runs)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--methods", nargs="+", default=["ekfac_influence", "trak", "dtrak", "das"])
    parser.add_argument("--layouts", nargs="+", default=list(GRADIENT_LAYOUTS), choices=list(GRADIENT_LAYOUTS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[16, 64], help="train and query draws per example")
    parser.add_argument("--measurement", default="loss", help="a measurement of the config: its query side and tuned values")
    parser.add_argument("--untuned", action="store_true", help="score at each method's untuned default instead of its tuned value")
    parser.add_argument("--out", default=None, help="also write the table to this CSV file")
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    results = Path(config["results"])
    unet, scheduler, _ = load_model(results / "models" / "full")
    train = torch.from_numpy(load_image_set(results / "data" / "train.npz").images)
    queries = torch.from_numpy(np.load(results / "queries" / "queries.npz")["images"])
    measurement = config["measurements"][args.measurement]
    summary = pd.read_parquet(results / "lds_summary.parquet").set_index(["method", "measurement"])
    inputs = (unet, scheduler, train, queries, results)

    rows = []
    print(f"{'method':<18}{'value':>9}{'layout':>30}{'draws':>6}{'retest':>8}{'seconds':>9}{'residual_retest':>16}", flush=True)
    for name, layout_name, draws in itertools.product(args.methods, args.layouts, args.budgets):
        layout, method = GRADIENT_LAYOUTS[layout_name], config["methods"][name]
        if layout["antithetic"] and draws % 2:
            continue
        value = default_value(method) if args.untuned else float(summary.at[(name, args.measurement), "tuned_value"])
        started = time.perf_counter()
        runs = [score(name, method, inputs, measurement, layout, draws, seed, value) for seed in (0, 1)]
        seconds = (time.perf_counter() - started) / 2
        row = {"method": name, "value": value, "layout": layout_name, "draws": draws, "retest": retest(*runs), "seconds": seconds}
        row["residual_retest"] = residual_retest(method, inputs, layout, draws)
        rows.append(row)
        print(f"{name:<18}{value:>9.0e}{layout_name:>30}{draws:>6}{row['retest']:>8.3f}{seconds:>9.1f}{row['residual_retest']:>16.3f}", flush=True)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
