"""Every method on one measurement: the cross-fitted tuned LDS (the headline),
the untuned default, two-way bootstrap intervals, the retraining ceiling,
noise-normalised LDS, the query-agnostic control and paired differences."""

import numpy as np
import pandas as pd

from ldsbench.evaluation.comparison import CEILING, CROSS_FIT, Grid, Split, paired_differences, query_agnostic_predictions, two_way_bootstrap
from ldsbench.evaluation.ground_truth import ground_truth_array
from ldsbench.evaluation.lds import spearman_per_query
from ldsbench.evaluation.tuning import Folds, consensus_value
from ldsbench.report.tables import interval_columns
from ldsbench.runtime.io import save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params, measurement = snakemake.params, snakemake.wildcards.measurement
level, n_seeds = params.statistics["level"], params.n_seeds

truth_frame = pd.read_parquet(snakemake.input.ground_truth)
n_queries = truth_frame["query"].nunique()
truth_per_seed = ground_truth_array(truth_frame, params.n_subsets, n_seeds, n_queries)
truth = truth_per_seed.mean(axis=0)
folds = Folds.of(n_queries, params.n_subsets, params.tuning)

# Variants on all queries and subsets: the untuned default and its
# query-agnostic control. One grid per method, cross-fitted over the folds:
# tuned over its values, its control read at the chosen values, and its
# untuned default read under the same protocol.
variants, grids, stored = {}, {}, {}
for method, path in zip(params.methods, snakemake.input.predictions, strict=True):
    archive = np.load(path)
    values, predictions = archive["values"], archive["predictions"]
    controls = np.stack([query_agnostic_predictions(p) for p in predictions])
    variants[method, "default"] = predictions[0]
    variants[method, "query_agnostic"] = controls[0]
    grids[method, "tuned"] = Grid(values, predictions, followers={(method, "tuned_control"): controls}, untuned=(method, "default"))
    defined = int(np.isfinite(spearman_per_query(predictions[0], truth)).sum())
    stored[method] = (values, defined)

boot = two_way_bootstrap(variants, truth_per_seed, {"all": Split()}, params.statistics["resamples"], params.statistics["seed"], grids=grids, folds=folds)


def estimate(key, prefix):
    low, high = boot.interval(key, level)
    return dict(zip([prefix, *interval_columns(prefix)], [boot.point[key], low, high], strict=True))


def normalised(key, split, prefix):
    if (CEILING, split) not in boot.point:
        return {prefix: np.nan, f"{prefix}_ci_low": np.nan, f"{prefix}_ci_high": np.nan}
    point, low, high = boot.ratio(key, (CEILING, split), level)
    return {prefix: point, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


common = {"measurement": measurement, "orientation": params.orientation, "n_subsets": params.n_subsets, "n_seeds": n_seeds, "folds": folds.n_folds}
rows = []
for method in params.methods:
    values, defined = stored[method]
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
save_parquet(snakemake.output.summary, summary)

# Paired differences: the tuned values cross-fitted (the headline), and the
# untuned defaults on all queries and subsets.
paired = []
for kind, split in [("tuned", CROSS_FIT), ("default", "all")]:
    frame = paired_differences(boot, [(method, kind) for method in params.methods], split, level)
    frame.insert(0, "method_b", [b[0] for b in frame.pop("b")])
    frame.insert(0, "method_a", [a[0] for a in frame.pop("a")])
    paired.append(frame.assign(measurement=measurement, values=kind, split=split))
paired = pd.concat(paired, ignore_index=True)
save_parquet(snakemake.output.paired, paired)

# The per-query values behind the headline.
per_query = pd.DataFrame(
    [
        {"method": method, "measurement": measurement, "query": q, "lds": value}
        for method in params.methods
        for q, value in enumerate(boot.per_query[method, "tuned"])
    ]
)
save_parquet(snakemake.output.per_query, per_query)
log.info("%s: %d draws over subsets and queries, %d folds\n%s", measurement, params.statistics["resamples"], folds.n_folds, summary.to_string())
