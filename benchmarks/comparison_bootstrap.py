"""Cost and coverage of the comparison's two-way bootstrap.

    .venv/bin/python benchmarks/comparison_bootstrap.py            # both
    .venv/bin/python benchmarks/comparison_bootstrap.py --cost     # time per draw at a given size
    .venv/bin/python benchmarks/comparison_bootstrap.py --coverage # intervals on synthetic benchmarks

Cost: seconds per draw (and the extrapolated minutes for ``--resamples``)
of one ``compare_methods`` job at M subsets, K seeds, Q queries and a
number of methods, each with a grid of L values cross-fitted over 2 folds
(its values and their query-agnostic controls) and its default and control
over all subsets (the paper's protocol with 12 methods and 5 values: M =
100, K = 5, Q = 1000), and the rank tables' memory, (methods x (2 L + 2) +
K + 1) x 4 int64 [M, Q] arrays.

Coverage: on synthetic benchmarks whose answer is known (a random method,
true LDS 0, against ground truth with a subset effect shared by every
query), how often the two-way interval and the query-only interval contain
0.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ldsbench.evaluation.comparison import Grid, Split, two_way_bootstrap
from ldsbench.evaluation.lds import bootstrap_mean_ci, group_predictions, spearman_per_query
from ldsbench.evaluation.tuning import Folds


def cost(subsets: int, seeds: int, queries: int, methods: int, values: int, resamples: int, draws: int) -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(seeds, subsets, queries))
    predictions, grids = {}, {}
    for method in range(methods):
        grid = rng.normal(size=(values, subsets, queries))
        controls = rng.normal(size=(values, subsets, queries))
        predictions[method, "default"], predictions[method, "control"] = grid[0], controls[0]
        grids[method] = Grid(np.arange(values, dtype=float), grid, followers={(method, "tuned_control"): controls}, untuned=(method, "untuned"))
    folds = Folds.of(queries, subsets, {"folds": 2, "seed": 0})
    started = time.perf_counter()
    two_way_bootstrap(predictions, truth, {"all": Split()}, draws, seed=0, grids=grids, folds=folds)
    per_draw = (time.perf_counter() - started) / (draws + 1)
    tables_mb = (methods * (2 * values + 2) + seeds + 1) * 4 * subsets * queries * 8 / 1e6
    print(
        f"M={subsets} K={seeds} Q={queries}, {methods} methods with {values} values: {per_draw:.3f} s per draw, "
        f"{per_draw * resamples / 60:.1f} min for {resamples} draws; rank tables {tables_mb:.0f} MB"
    )


def coverage(trials: int, subsets: int, queries: int, resamples: int) -> None:
    rng = np.random.default_rng(1)
    two_way = queries_only = 0
    for trial in range(trials):
        quality = rng.normal(size=(subsets, 1))
        truth = quality[None] + 0.3 * rng.normal(size=(2, subsets, queries))
        mask = rng.random((subsets, 64)) < 0.5
        # One random vector for every query: its LDS is one shared draw of mean 0.
        predictions = group_predictions(np.repeat(rng.normal(size=(1, 64)), queries, axis=0), mask)
        boot = two_way_bootstrap({"random": predictions}, truth, {"all": Split()}, resamples, seed=trial)
        low, high = boot.interval(("random", "all"), 0.95)
        two_way += low <= 0 <= high
        plain = bootstrap_mean_ci(spearman_per_query(predictions, truth.mean(axis=0)), n_resamples=resamples, seed=trial)
        queries_only += plain["ci_low"] <= 0 <= plain["ci_high"]
    print(
        f"{trials} synthetic benchmarks (M={subsets}, Q={queries}, true LDS 0): 95% intervals contain it {two_way / trials:.0%} (two-way), {queries_only / trials:.0%} (queries only)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cost", action="store_true", help="only the time per draw")
    parser.add_argument("--coverage", action="store_true", help="only the coverage check")
    parser.add_argument("--subsets", type=int, default=100, help="M")
    parser.add_argument("--seeds", type=int, default=5, help="K")
    parser.add_argument("--queries", type=int, default=1000, help="Q")
    parser.add_argument("--methods", type=int, default=12)
    parser.add_argument("--values", type=int, default=5, help="L, the default and its grid")
    parser.add_argument("--resamples", type=int, default=2000, help="draws of a real comparison (statistics.resamples)")
    parser.add_argument("--timed-draws", type=int, default=10, help="draws actually timed")
    parser.add_argument("--trials", type=int, default=200, help="synthetic benchmarks in the coverage check")
    args = parser.parse_args()
    both = not (args.cost or args.coverage)
    if args.cost or both:
        cost(args.subsets, args.seeds, args.queries, args.methods, args.values, args.resamples, args.timed_draws)
        cost(16, 2, 36, 11, 9, args.resamples, args.timed_draws)  # the default config (TRAK-style grids of 9)
    if args.coverage or both:
        coverage(args.trials, 16, 36, 500)


if __name__ == "__main__":
    main()
