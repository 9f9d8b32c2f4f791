"""Markdown tables of benchmark results."""

from __future__ import annotations

import pandas as pd

from ldsbench.evaluation.comparison import pair_difference
from ldsbench.spec.measurement_types import ORIENTATION_TEXT

__all__ = ["interval_columns", "summary_markdown", "paired_markdown", "removal_markdown"]


def _escape(text) -> str:
    # A literal "|" would split a markdown cell.
    return str(text).replace("|", "\\|")


def _fmt(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:.3f}"


def interval_columns(prefix: str) -> tuple[str, str]:
    """Columns of an estimate's interval: the LDS's own keeps the plain
    ``ci_low``/``ci_high``; every other estimate ``{prefix}_ci_low``/``_high``."""
    return ("ci_low", "ci_high") if prefix == "lds" else (f"{prefix}_ci_low", f"{prefix}_ci_high")


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
