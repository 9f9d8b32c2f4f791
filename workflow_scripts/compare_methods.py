"""Every method on one measurement: tuned values, two-way bootstrap intervals,
the retraining ceiling, noise-normalised LDS, the query-agnostic control and
paired differences."""

import numpy as np
import pandas as pd

from ldsbench.comparison import CEILING, paired_differences, query_agnostic_predictions, two_way_bootstrap
from ldsbench.io import save_parquet
from ldsbench.jobs import start_job
from ldsbench.lds import ground_truth_array, spearman_per_query
from ldsbench.tables import interval_columns
from ldsbench.tuning import choose_tuned_value, tuning_split

log = start_job(snakemake)
params, measurement = snakemake.params, snakemake.wildcards.measurement
level, n_seeds = params.statistics["level"], params.n_seeds

truth_frame = pd.read_parquet(snakemake.input.ground_truth)
n_queries = truth_frame["query"].nunique()
truth_per_seed = ground_truth_array(truth_frame, params.n_subsets, n_seeds, n_queries)
truth = truth_per_seed.mean(axis=0)
tuning = tuning_split(n_queries, params.tuning["fraction"], params.tuning["seed"])

# Variants are (method, kind): the untuned default, the value tuned on the
# tuning queries, and the default's query-agnostic control.
variants, chosen = {}, {}
for method, path in zip(params.methods, snakemake.input.predictions, strict=True):
    stored = np.load(path)
    values, predictions = stored["values"], stored["predictions"]
    per_query = np.stack([spearman_per_query(p, truth) for p in predictions])
    index, tuning_lds = choose_tuned_value(values, per_query, tuning)
    chosen[method] = {"tuned_damping": float(values[index]), "tuning_lds": tuning_lds, "n_queries": int(np.isfinite(per_query[0]).sum())}
    variants[method, "default"] = predictions[0]
    variants[method, "tuned"] = predictions[index]
    variants[method, "query_agnostic"] = query_agnostic_predictions(predictions[0])

# Stratum 0 holds the tuning queries, 1 the test queries.
strata = (~tuning).astype(int)
boot = two_way_bootstrap(variants, truth_per_seed, strata, {"all": [0, 1], "test": [1]}, params.statistics["resamples"], params.statistics["seed"])


def estimate(key, prefix):
    low, high = boot.interval(key, level)
    return dict(zip([prefix, *interval_columns(prefix)], [boot.point[key], low, high], strict=True))


def normalised(key, split, prefix):
    if (CEILING, split) not in boot.point:
        return {prefix: np.nan, f"{prefix}_ci_low": np.nan, f"{prefix}_ci_high": np.nan}
    point, low, high = boot.ratio(key, (CEILING, split), level)
    return {prefix: point, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


common = {"measurement": measurement, "orientation": params.orientation, "n_subsets": params.n_subsets, "n_seeds": n_seeds, "n_test": int((~tuning).sum())}
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
