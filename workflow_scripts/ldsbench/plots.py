"""Figures and tables of benchmark results.

Figures are drawn on ``matplotlib.figure.Figure`` objects attached to the Agg
canvas directly, so nothing depends on (or changes) the global pyplot backend
and the functions work on machines without a display.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_lds_summary", "plot_lds_vs_damping", "summary_markdown"]

LDS_LABEL = "LDS (Spearman, mean over queries)"
SUMMARY_COLUMNS = [
    "method", "measurement", "lds", "ci_low", "ci_high",
    "n_queries", "n_subsets", "n_seeds",
]
DAMPING_COLUMNS = ["method", "measurement", "damping", "lds", "ci_low", "ci_high"]
DPI = 150


def _require_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")
    if len(frame) == 0:
        raise ValueError(f"{name} has no rows")


def _ordered_unique(series: pd.Series) -> list:
    """Unique values in order of first appearance (the caller's order)."""
    return list(dict.fromkeys(series.tolist()))


def _method_colors(methods: list) -> dict:
    # One fixed colour per method so that figures agree with each other.
    cycle = [f"C{i}" for i in range(10)]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


def _describe(values: pd.Series) -> str:
    """``"100"`` or ``"100/200"`` when rows differ."""
    return "/".join(str(int(v)) for v in sorted(pd.unique(values)))


def _save(fig: Figure, path) -> None:
    FigureCanvasAgg(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight")


def plot_lds_summary(summary: pd.DataFrame, path) -> None:
    """Grouped bar chart of LDS: one group per measurement, one bar per method.

    Error bars are the (asymmetric) bootstrap interval; a missing
    (method, measurement) pair or a NaN LDS leaves its slot empty.

    Args:
        summary: columns method, measurement, lds, ci_low, ci_high, n_queries,
            n_subsets, n_seeds; one row per (method, measurement).
        path: output PNG path (parent folders are created).
    """
    _require_columns(summary, SUMMARY_COLUMNS, "summary")
    measurements = _ordered_unique(summary["measurement"])
    methods = _ordered_unique(summary["method"])
    colors = _method_colors(methods)
    table = summary.set_index(["method", "measurement"])

    width = 0.8 / len(methods)
    x = np.arange(len(measurements))
    fig = Figure(figsize=(max(6.0, 1.2 + 0.45 * len(methods) * len(measurements)), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for k, method in enumerate(methods):
        rows = table.reindex([(method, m) for m in measurements])
        lds = rows["lds"].to_numpy(dtype=float)
        # Clip at 0 so an interval that does not enclose its point estimate
        # (possible for percentile intervals) cannot give a negative bar length.
        lower = np.clip(lds - rows["ci_low"].to_numpy(dtype=float), 0, None)
        upper = np.clip(rows["ci_high"].to_numpy(dtype=float) - lds, 0, None)
        offset = (k - (len(methods) - 1) / 2) * width
        ax.bar(
            x + offset, np.nan_to_num(lds), width=width * 0.95,
            color=colors[method], label=str(method),
        )
        ok = np.isfinite(lds)
        ax.errorbar(
            (x + offset)[ok], lds[ok], yerr=np.vstack([lower, upper])[:, ok],
            fmt="none", ecolor="black", elinewidth=1, capsize=3,
        )
        # Say so where a value is undefined, rather than show an empty slot.
        for xpos in (x + offset)[~ok]:
            ax.text(xpos, 0.0, "n/a", ha="center", va="bottom", fontsize=8, rotation=90)

    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    long_names = max(len(str(m)) for m in measurements) > 12
    ax.set_xticklabels(
        [str(m) for m in measurements],
        rotation=20 if long_names else 0, ha="right" if long_names else "center",
        fontsize=10,
    )
    ax.set_xlabel("measurement", fontsize=11)
    ax.set_ylabel(LDS_LABEL, fontsize=11)
    ax.set_title(
        f"Linear Datamodeling Score, M = {_describe(summary['n_subsets'])} subsets, "
        f"K = {_describe(summary['n_seeds'])} seeds (95% bootstrap CI)",
        fontsize=11,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(title="method", fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_lds_vs_damping(frame: pd.DataFrame, path) -> None:
    """LDS against damping, one panel per measurement, one line per method.

    Args:
        frame: columns method, measurement, damping (> 0), lds, ci_low,
            ci_high; one row per (method, measurement, damping).
        path: output PNG path (parent folders are created).
    """
    _require_columns(frame, DAMPING_COLUMNS, "frame")
    if not (frame["damping"] > 0).all():
        raise ValueError("damping must be > 0 for a logarithmic axis")
    measurements = _ordered_unique(frame["measurement"])
    methods = _ordered_unique(frame["method"])
    colors = _method_colors(methods)

    n_cols = min(3, len(measurements))
    n_rows = math.ceil(len(measurements) / n_cols)
    fig = Figure(figsize=(4.5 * n_cols + 1.5, 3.6 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    for ax, measurement in zip(axes.flat, measurements):
        panel = frame[frame["measurement"] == measurement]
        for method in methods:
            rows = panel[panel["method"] == method].sort_values("damping")
            if rows.empty:
                continue
            ax.plot(
                rows["damping"], rows["lds"], marker="o", markersize=4,
                color=colors[method], label=str(method),
            )
            ax.fill_between(
                rows["damping"], rows["ci_low"], rows["ci_high"],
                color=colors[method], alpha=0.2, linewidth=0,
            )
        ax.set_xscale("log")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(str(measurement), fontsize=11)
        ax.set_xlabel("damping (influence) or lambda (TRAK), log scale", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(LDS_LABEL, fontsize=10)
    for ax in list(axes.flat)[len(measurements):]:
        ax.set_visible(False)

    # One legend for the figure: the first line drawn for each method.
    handles = [
        next(l for a in axes.flat for l in a.lines if l.get_label() == str(method))
        for method in methods
    ]
    fig.legend(handles, [str(m) for m in methods], title="method", fontsize=9,
               loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle("LDS against damping (shaded: 95% bootstrap CI)", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def _escape(text) -> str:
    # A literal "|" would split a markdown cell.
    return str(text).replace("|", "\\|")


def _fmt(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:.3f}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """Markdown table of the summary, LDS with its interval to 3 decimals.

    Columns: method, measurement, ``LDS [95% CI]``, queries (with the number of
    excluded queries when the summary has an ``n_excluded`` column), subsets,
    seeds. Rows keep the order of ``summary``.
    """
    _require_columns(summary, SUMMARY_COLUMNS, "summary")
    has_excluded = "n_excluded" in summary.columns
    header = ["method", "measurement", "LDS [95% CI]", "queries"]
    if has_excluded:
        header.append("excluded (NaN)")
    header += ["subsets (M)", "seeds (K)"]

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "--:", "--:"] + ["--:"] * (len(header) - 4)) + "|",
    ]
    for row in summary.itertuples(index=False):
        cells = [
            _escape(row.method),
            _escape(row.measurement),
            f"{_fmt(row.lds)} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]",
            str(row.n_queries),
        ]
        if has_excluded:
            cells.append(str(row.n_excluded))
        cells += [str(row.n_subsets), str(row.n_seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
