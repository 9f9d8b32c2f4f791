"""Every method on one measurement: tuned values, two-way bootstrap intervals,
the retraining ceiling, noise-normalised LDS, the query-agnostic control and
paired differences."""

import numpy as np
import pandas as pd

from ldsbench.comparison import CEILING, Split, paired_differences, query_agnostic_predictions, two_way_bootstrap
from ldsbench.io import save_parquet
from ldsbench.jobs import start_job
from ldsbench.lds import ground_truth_array, spearman_per_query
from ldsbench.tables import interval_columns
from ldsbench.tuning import TuningSplit, choose_on_tuning_split

log = start_job(snakemake)
params, measurement = snakemake.params, snakemake.wildcards.measurement
level, n_seeds = params.statistics["level"], params.n_seeds

truth_frame = pd.read_parquet(snakemake.input.ground_truth)
n_queries = truth_frame["query"].nunique()
truth_per_seed = ground_truth_array(truth_frame, params.n_subsets, n_seeds, n_queries)
truth = truth_per_seed.mean(axis=0)
split = TuningSplit.of(n_queries, params.n_subsets, params.tuning)

# Variants are (method, kind): the untuned default, the value tuned on the
# tuning queries over the tuning subsets, and the default's query-agnostic
# control.
variants, chosen = {}, {}
for method, path in zip(params.methods, snakemake.input.predictions, strict=True):
    stored = np.load(path)
    values, predictions = stored["values"], stored["predictions"]
    index, tuning_lds = choose_on_tuning_split(values, predictions, truth, split)
    defined = int(np.isfinite(spearman_per_query(predictions[0], truth)).sum())
    chosen[method] = {"tuned_damping": float(values[index]), "tuning_lds": tuning_lds, "n_queries": defined}
    variants[method, "default"] = predictions[0]
    variants[method, "tuned"] = predictions[index]
    variants[method, "query_agnostic"] = query_agnostic_predictions(predictions[0])

# "all": the untuned numbers on every query and subset; "test": the queries
# and subsets that tuning did not see.
splits = {"all": Split(), "test": Split(queries=~split.queries, subsets=~split.subsets)}
boot = two_way_bootstrap(variants, truth_per_seed, splits, params.statistics["resamples"], params.statistics["seed"])


def estimate(key, prefix):
    low, high = boot.interval(key, level)
    return dict(zip([prefix, *interval_columns(prefix)], [boot.point[key], low, high], strict=True))


def normalised(key, split, prefix):
    if (CEILING, split) not in boot.point:
        return {prefix: np.nan, f"{prefix}_ci_low": np.nan, f"{prefix}_ci_high": np.nan}
    point, low, high = boot.ratio(key, (CEILING, split), level)
    return {prefix: point, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


common = {
    "measurement": measurement,
    "orientation": params.orientation,
    "n_subsets": params.n_subsets,
    "n_seeds": n_seeds,
    "n_test": int((~split.queries).sum()),
    "n_test_subsets": int((~split.subsets).sum()),
}
rows = []
for method in params.methods:
    rows.append(
        {
            "method": method,
            **common,
            **estimate(((method, "default"), "all"), "lds"),
            **normalised(((method, "default"), "all"), "all", "lds_over_ceiling"),
            **estimate(((method, "query_agnostic"), "all"), "query_agnostic_lds"),
            **chosen[method],
            **estimate(((method, "default"), "test"), "test_default_lds"),
            **estimate(((method, "tuned"), "test"), "test_tuned_lds"),
            **normalised(((method, "tuned"), "test"), "test", "test_tuned_over_ceiling"),
        }
    )
if n_seeds >= 2:
    rows.append(
        {
            "method": CEILING,
            **common,
            **estimate((CEILING, "all"), "lds"),
            **estimate((CEILING, "test"), "test_default_lds"),
            **estimate((CEILING, "test"), "test_tuned_lds"),
            "n_queries": n_queries,
        }
    )
summary = pd.DataFrame(rows)
save_parquet(snakemake.output.summary, summary)

# Paired differences: the untuned defaults on all queries, and the tuned
# values on the test queries (tuning used the other split).
paired = []
for kind, split in [("default", "all"), ("tuned", "test")]:
    frame = paired_differences(boot, [(method, kind) for method in params.methods], split, level)
    frame.insert(0, "method_b", [b[0] for b in frame.pop("b")])
    frame.insert(0, "method_a", [a[0] for a in frame.pop("a")])
    paired.append(frame.assign(measurement=measurement, values=kind, split=split))
paired = pd.concat(paired, ignore_index=True)
save_parquet(snakemake.output.paired, paired)
log.info("%s: %d draws over subsets and queries\n%s", measurement, params.statistics["resamples"], summary.to_string())
