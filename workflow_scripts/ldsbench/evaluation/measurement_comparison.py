"""Every method on one measurement, as the tables of the summary: the
cross-fitted tuned LDS (the headline), the untuned default, two-way bootstrap
intervals, the retraining ceiling, LDS / ceiling, the query-agnostic control
and the paired differences with Holm's adjustment (the statistics are in
:mod:`ldsbench.evaluation.comparison` and :mod:`ldsbench.evaluation.tuning`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ldsbench.evaluation.comparison import CEILING, CROSS_FIT, Bootstrap, Grid, Split, paired_differences, query_agnostic_predictions, two_way_bootstrap
from ldsbench.evaluation.lds import spearman_per_query
from ldsbench.evaluation.tuning import Folds, consensus_value

__all__ = ["MeasurementComparison", "interval_columns", "compare_methods"]


@dataclass(frozen=True)
class MeasurementComparison:
    """The tables of one measurement (``comparison/{measurement}*.parquet``).

    Attributes:
        summary: one row per method, in the given order, then the ceiling
            (K >= 2).
        paired: every pair of methods, the tuned values cross-fitted first,
            then the untuned defaults on all queries and subsets.
        per_query: method, measurement, query, lds: the cross-fitted tuned
            LDS of every query.
        bootstrap: the draws behind them.
        folds: the cross-fitting folds.
    """

    summary: pd.DataFrame
    paired: pd.DataFrame
    per_query: pd.DataFrame
    bootstrap: Bootstrap
    folds: Folds


def interval_columns(prefix: str) -> tuple[str, str]:
    """Columns of an estimate's interval: the LDS's own keeps the plain
    ``ci_low``/``ci_high``; every other estimate ``{prefix}_ci_low``/``_high``."""
    return ("ci_low", "ci_high") if prefix == "lds" else (f"{prefix}_ci_low", f"{prefix}_ci_high")


def compare_methods(methods: dict, truth_per_seed: np.ndarray, measurement: str, orientation: str, tuning: dict, statistics: dict) -> MeasurementComparison:
    """Compare every method on one measurement from one two-way bootstrap.

    Each method is tuned by cross-fitting over its values (its query-agnostic
    control read at the values its cells chose, its untuned default read
    under the same protocol), and its untuned default and control are also
    read on all queries and subsets.

    Args:
        methods: ``{method: (values [L], predictions [L, M, Q])}`` in the
            order of the tables, the untuned default first
            (``lds/{method}/{measurement}.predictions.npz``).
        truth_per_seed: ``[K, M, Q]`` ground truth before the seed mean.
        measurement, orientation: the names in the tables.
        tuning: the config's ``tuning`` block (``folds``, ``seed``).
        statistics: the config's ``statistics`` block (``resamples``,
            ``level``, ``seed``).

    Returns:
        A :class:`MeasurementComparison`.
    """
    truth_per_seed = np.asarray(truth_per_seed, dtype=np.float64)
    n_seeds, n_subsets, n_queries = truth_per_seed.shape
    truth = truth_per_seed.mean(axis=0)
    level = statistics["level"]
    folds = Folds.of(n_queries, n_subsets, tuning)

    variants, grids, stored = {}, {}, {}
    for method, (values, predictions) in methods.items():
        controls = np.stack([query_agnostic_predictions(p) for p in predictions])
        variants[method, "default"] = predictions[0]
        variants[method, "query_agnostic"] = controls[0]
        grids[method, "tuned"] = Grid(values, predictions, followers={(method, "tuned_control"): controls}, untuned=(method, "default"))
        defined = int(np.isfinite(spearman_per_query(predictions[0], truth)).sum())
        stored[method] = (values, defined)

    boot = two_way_bootstrap(variants, truth_per_seed, {"all": Split()}, statistics["resamples"], statistics["seed"], grids=grids, folds=folds)

    def estimate(key, prefix):
        low, high = boot.interval(key, level)
        return dict(zip([prefix, *interval_columns(prefix)], [boot.point[key], low, high], strict=True))

    def normalised(key, split, prefix):
        if (CEILING, split) not in boot.point:
            return {prefix: np.nan, f"{prefix}_ci_low": np.nan, f"{prefix}_ci_high": np.nan}
        point, low, high = boot.ratio(key, (CEILING, split), level)
        return {prefix: point, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}

    common = {"measurement": measurement, "orientation": orientation, "n_subsets": n_subsets, "n_seeds": n_seeds, "folds": folds.n_folds}
    rows = []
    for method, (values, defined) in stored.items():
        chosen = values[boot.chosen[method, "tuned"]]
        rows.append(
            {
                "method": method,
                **common,
                **estimate(((method, "tuned"), CROSS_FIT), "lds"),
                **normalised(((method, "tuned"), CROSS_FIT), CROSS_FIT, "lds_over_ceiling"),
                **estimate(((method, "tuned_control"), CROSS_FIT), "query_agnostic_lds"),
                "tuned_value": consensus_value(chosen),
                "tuned_values": " ".join(f"{v:.3g}" for v in chosen.ravel()),
                **estimate(((method, "default"), CROSS_FIT), "default_lds"),
                **estimate(((method, "default"), "all"), "all_subsets_lds"),
                **normalised(((method, "default"), "all"), "all", "all_subsets_over_ceiling"),
                **estimate(((method, "query_agnostic"), "all"), "all_subsets_query_agnostic_lds"),
                "n_queries": defined,
            }
        )
    if n_seeds >= 2:
        rows.append(
            {
                "method": CEILING,
                **common,
                **estimate((CEILING, CROSS_FIT), "lds"),
                **estimate((CEILING, CROSS_FIT), "default_lds"),
                **estimate((CEILING, "all"), "all_subsets_lds"),
                "n_queries": n_queries,
            }
        )
    summary = pd.DataFrame(rows)

    # Paired differences: the tuned values cross-fitted (the headline), and
    # the untuned defaults on all queries and subsets.
    paired = []
    for kind, split in [("tuned", CROSS_FIT), ("default", "all")]:
        frame = paired_differences(boot, [(method, kind) for method in methods], split, level)
        frame.insert(0, "method_b", [b[0] for b in frame.pop("b")])
        frame.insert(0, "method_a", [a[0] for a in frame.pop("a")])
        paired.append(frame.assign(measurement=measurement, values=kind, split=split))
    paired = pd.concat(paired, ignore_index=True)

    per_query = pd.DataFrame(
        [
            {"method": method, "measurement": measurement, "query": q, "lds": value}
            for method in methods
            for q, value in enumerate(boot.per_query[method, "tuned"])
        ]
    )
    return MeasurementComparison(summary=summary, paired=paired, per_query=per_query, bootstrap=boot, folds=folds)
