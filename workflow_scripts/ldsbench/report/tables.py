"""Tables of benchmark results: the summary's row order, the sweep and
per-query tables, and their Markdown forms."""

from __future__ import annotations

import pandas as pd

from ldsbench.evaluation.comparison import pair_difference
from ldsbench.evaluation.lds import bootstrap_mean_ci
from ldsbench.evaluation.measurement_comparison import interval_columns
from ldsbench.spec.measurement_types import ORIENTATION_TEXT

__all__ = [
    "SWEEP_COLUMNS",
    "interval_columns",
    "ordered_summary",
    "per_query_table",
    "sweep_table",
    "summary_markdown",
    "paired_markdown",
    "removal_markdown",
]

#: ``lds_sweep.parquet``: one row per (method, measurement, value of its hyperparameter).
SWEEP_COLUMNS = ["method", "measurement", "hyperparameter", "value", "lds", "ci_low", "ci_high"]


def ordered_summary(summary: pd.DataFrame, methods, measurements) -> pd.DataFrame:
    """The summary's rows ordered by method (``methods`` first, in their
    order, then any other, such as the ceiling, by name) and within a
    method by measurement (in the order of ``measurements``), with a fresh
    index."""
    method_order = {name: k for k, name in enumerate([*methods, *sorted(set(summary["method"]) - set(methods))])}
    measurements = list(measurements)
    summary = summary.sort_values(
        ["method", "measurement"], key=lambda col: col.map(method_order) if col.name == "method" else col.map(measurements.index), kind="stable"
    )
    return summary.reset_index(drop=True)


def per_query_table(tuned: list[pd.DataFrame], default: list[pd.DataFrame]) -> pd.DataFrame:
    """``lds_per_query.parquet``: the per-query tables of the cross-fitted
    tuned LDS (``values`` = ``tuned``), then of the untuned default over all
    subsets (``default``), in the order given."""
    return pd.concat([*(frame.assign(values="tuned") for frame in tuned), *(frame.assign(values="default") for frame in default)], ignore_index=True)


def sweep_table(sweep_per_query: pd.DataFrame) -> pd.DataFrame:
    """``lds_sweep.parquet`` from the per-query LDS of every swept value
    (columns method, measurement, hyperparameter, value, query, lds): the
    mean over queries with a percentile interval that resamples queries
    only (one two-way bootstrap per value would multiply the comparison's
    cost by the grid size; the summary's tuned and untuned values carry the
    two-way intervals). Values without a hyperparameter (NaN) drop out."""
    rows = []
    for (method, measurement, hyperparameter, value), group in sweep_per_query.groupby(["method", "measurement", "hyperparameter", "value"], sort=False):
        stats = bootstrap_mean_ci(group.sort_values("query")["lds"].to_numpy())
        rows.append(
            {
                "method": method,
                "measurement": measurement,
                "hyperparameter": hyperparameter,
                "value": value,
                "lds": stats["mean"],
                "ci_low": stats["ci_low"],
                "ci_high": stats["ci_high"],
            }
        )
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def _escape(text) -> str:
    # A literal "|" would split a markdown cell.
    return str(text).replace("|", "\\|")


def _fmt(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:.3f}"


def _with_interval(row, prefix: str) -> str:
    value = getattr(row, prefix)
    if pd.isna(value):
        return "n/a"
    low, high = interval_columns(prefix)
    return f"{_fmt(value)} [{_fmt(getattr(row, low))}, {_fmt(getattr(row, high))}]"


def _count(value) -> str:
    """A cost as a whole number with thousands separators; blank if unknown."""
    return "" if pd.isna(value) else f"{value:,.0f}"


def _value(value) -> str:
    return "" if pd.isna(value) else f"{value:.0e}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """Markdown table of the summary (``compare_methods`` rows), values to 3
    decimals with their intervals.

    Columns: method, measurement, orientation, the headline LDS (tuned by
    cross-fitting) with the value most cells chose, LDS / ceiling, the
    query-agnostic control's LDS, the untuned default under the same
    protocol and over all M subsets, queries, subsets, folds, seeds, and the
    method's cost: its scoring job's gradient passes (forward+backward
    passes of one draw, all measurements together) and wall seconds. Rows
    keep the order of ``summary``.
    """
    header = [
        "method",
        "measurement",
        "orientation",
        "LDS, tuned [95% CI]",
        "tuned value",
        "LDS / ceiling",
        "query-agnostic control",
        "untuned default",
        "untuned, all M subsets",
        "queries",
        "subsets (M)",
        "folds",
        "seeds (K)",
        "gradient passes",
        "scoring s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|" + "--:|" * (len(header) - 3)]
    for row in summary.itertuples(index=False):
        cells = [
            _escape(row.method),
            _escape(row.measurement),
            ORIENTATION_TEXT.get(row.orientation, row.orientation),
            _with_interval(row, "lds"),
            _value(getattr(row, "tuned_value", float("nan"))),
            _with_interval(row, "lds_over_ceiling"),
            _with_interval(row, "query_agnostic_lds"),
            _with_interval(row, "default_lds"),
            _with_interval(row, "all_subsets_lds"),
            str(row.n_queries),
            str(row.n_subsets),
            str(row.folds),
            str(row.n_seeds),
            _count(getattr(row, "gradient_passes", float("nan"))),
            _count(getattr(row, "scoring_seconds", float("nan"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_markdown(summary: pd.DataFrame, paired: pd.DataFrame, level: float) -> str:
    """Per measurement, every method's LDS difference to the measurement's
    best method (tuned by cross-fitting, the headline), with its interval
    and Holm-adjusted p-value; ``*`` marks a difference significant at
    ``level``."""
    lines = []
    tuned = paired[paired["values"] == "tuned"]
    for measurement, rows in summary[summary["method"].isin(set(tuned["method_a"]) | set(tuned["method_b"]))].groupby("measurement", sort=False):
        if not rows["lds"].notna().any():
            continue
        best = rows.loc[rows["lds"].idxmax(), "method"]
        lines += [
            f"Paired differences on `{measurement}` against the best method, {_escape(best)} (tuned by cross-fitting; "
            f"two-way bootstrap over queries and subsets; * Holm-adjusted p < {1 - level:.2g} over all {len(tuned[tuned['measurement'] == measurement])} pairs):",
            "",
            f"| method | LDS - LDS({_escape(best)}) [{level:.0%} CI] | p (Holm) |",
            "|---|--:|--:|",
        ]
        pairs = tuned[tuned["measurement"] == measurement]
        for method in rows["method"]:
            if method == best:
                continue
            pair = pair_difference(pairs, method, best)
            mark = " *" if pair["significant"] else ""
            lines.append(f"| {_escape(method)} | {_fmt(pair['difference'])} [{_fmt(pair['ci_low'])}, {_fmt(pair['ci_high'])}]{mark} | {pair['p_holm']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def removal_markdown(summary: pd.DataFrame, unit: str) -> str:
    """Markdown table of ``removal.summarize_changes`` output."""
    header = ["ranked by", "removed", f"change [{unit}] (mean +- SE)", "image L2", "image L2, all data", "models"]
    lines = ["| " + " | ".join(header) + " |", "|---|--:|--:|--:|--:|--:|"]
    for row in summary.itertuples(index=False):
        lines.append(
            f"| {_escape(row.ranker)} | {100 * row.fraction:g}% ({row.k}) | {_fmt(row.change)} +- {_fmt(row.change_se)} "
            f"| {_fmt(row.image_l2)} | {_fmt(row.reference_image_l2)} | {row.n} |"
        )
    return "\n".join(lines) + "\n"
