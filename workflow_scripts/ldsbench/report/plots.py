"""Figures of benchmark results (the markdown tables are in ``tables``).

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

from ldsbench.report.tables import SWEEP_COLUMNS
from ldsbench.spec.measurement_types import ORIENTATION_TEXT
from ldsbench.spec.training_runs import RANDOM_CONTROL

__all__ = ["plot_lds_per_query", "plot_lds_summary", "plot_lds_vs_value", "plot_paired_differences", "plot_removal"]

LDS_LABEL = "LDS (Spearman, mean over queries)"
SUMMARY_COLUMNS = [
    "method",
    "measurement",
    "lds",
    "ci_low",
    "ci_high",
    "n_queries",
    "n_subsets",
    "n_seeds",
]
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
    # One fixed colour per method so that figures agree with each other;
    # past ten methods, the light shades of tab20 follow the ten tab10 colours.
    cycle = [f"C{i}" for i in range(10)] + [f"tab20:{i}" for i in range(1, 20, 2)]
    colors = {}
    for k, method in enumerate(methods):
        name = cycle[k % len(cycle)]
        if name.startswith("tab20:"):
            from matplotlib import colormaps

            name = colormaps["tab20"](int(name.split(":")[1]))
        colors[method] = name
    return colors


def _describe(values: pd.Series) -> str:
    """``"100"`` or ``"100/200"`` when rows differ."""
    return "/".join(str(int(v)) for v in sorted(pd.unique(values)))


def _save(fig: Figure, path) -> None:
    FigureCanvasAgg(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight")


def plot_lds_summary(summary: pd.DataFrame, path) -> None:
    """LDS per method, one panel per measurement (horizontal bars, methods
    labelled on every panel's y axis, the value printed next to each bar).

    Error bars are the (asymmetric) two-way bootstrap interval; a hollow
    diamond marks the method's query-agnostic control and a hollow circle its
    untuned default where the summary has them; a missing (method,
    measurement) pair or a NaN LDS is marked "n/a".

    Args:
        summary: columns method, measurement, lds, ci_low, ci_high,
            n_queries, n_subsets, n_seeds, optionally query_agnostic_lds,
            default_lds (a hollow circle: the untuned default) and folds (of
            the cross-fitting that tuned ``lds``); one row per (method,
            measurement).
        path: output PNG path (parent folders are created).
    """
    _require_columns(summary, SUMMARY_COLUMNS, "summary")
    measurements = _ordered_unique(summary["measurement"])
    methods = _ordered_unique(summary["method"])
    colors = _method_colors(methods)
    table = summary.set_index(["method", "measurement"])
    n_cols = min(3, len(measurements))
    n_rows = math.ceil(len(measurements) / n_cols)
    low = min(0.0, float(np.nanmin(summary["ci_low"].to_numpy(dtype=float)))) if summary["ci_low"].notna().any() else 0.0
    high = max(0.0, float(np.nanmax(summary["ci_high"].to_numpy(dtype=float)))) if summary["ci_high"].notna().any() else 1.0
    pad = 0.12 * (high - low or 1.0)
    fig = Figure(figsize=(4.6 * n_cols + 1.2, (0.32 * len(methods) + 1.1) * n_rows + 0.6))
    y = np.arange(len(methods))
    for p, measurement in enumerate(measurements):
        ax = fig.add_subplot(n_rows, n_cols, p + 1)
        rows = table.reindex([(method, measurement) for method in methods])
        lds = rows["lds"].to_numpy(dtype=float)
        # Clip at 0 so an interval that does not enclose its point estimate
        # (possible for percentile intervals) cannot give a negative bar length.
        lower = np.clip(lds - rows["ci_low"].to_numpy(dtype=float), 0, None)
        upper = np.clip(rows["ci_high"].to_numpy(dtype=float) - lds, 0, None)
        ok = np.isfinite(lds)
        ax.barh(y, np.nan_to_num(lds), height=0.75, color=[colors[m] for m in methods])
        ax.errorbar(lds[ok], y[ok], xerr=np.vstack([lower, upper])[:, ok], fmt="none", ecolor="black", elinewidth=1, capsize=2)
        for k in range(len(methods)):
            if ok[k]:
                end = rows["ci_high"].iloc[k] if lds[k] >= 0 else rows["ci_low"].iloc[k]
                end = lds[k] if not np.isfinite(end) else end
                ax.text(
                    end + (0.01 if lds[k] >= 0 else -0.01) * (high - low or 1.0),
                    y[k],
                    f"{lds[k]:.2f}",
                    va="center",
                    ha="left" if lds[k] >= 0 else "right",
                    fontsize=7.5,
                )
            else:
                ax.text(0.0, y[k], " n/a", va="center", ha="left", fontsize=8)
        for column, marker, label in (("query_agnostic_lds", "D", "query-agnostic control"), ("default_lds", "o", "untuned default")):
            if column not in rows:
                continue
            marks = rows[column].to_numpy(dtype=float)
            shown = np.isfinite(marks)
            ax.plot(marks[shown], y[shown], marker, linestyle="none", markerfacecolor="none", markeredgecolor="black", markersize=4, label=label)
        if p == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([str(m) for m in methods] if p % n_cols == 0 else [], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(low - pad, high + pad)
        ax.set_title(str(measurement), fontsize=10)
        ax.set_xlabel("LDS (Spearman, mean over queries)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    tuned = f", damping/lambda tuned by {_describe(summary['folds'])}-fold cross-fitting" if "folds" in summary else ""
    fig.suptitle(
        f"Linear Datamodeling Score{tuned}, M = {_describe(summary['n_subsets'])} subsets, K = {_describe(summary['n_seeds'])} seeds"
        " (95% CI, bootstrap over queries and subsets)",
        fontsize=11,
    )
    fig.tight_layout()
    _save(fig, path)


def plot_lds_per_query(per_query: pd.DataFrame, path) -> None:
    """Distribution of the per-query LDS: one panel per measurement, one box
    per method (median, quartiles, whiskers at 1.5 IQR) with every query as a
    dot; NaN queries (constant ranks) are left out and counted in the label.

    Args:
        per_query: columns method, measurement, query, lds.
        path: output PNG path.
    """
    _require_columns(per_query, ["method", "measurement", "query", "lds"], "per_query")
    measurements = _ordered_unique(per_query["measurement"])
    methods = _ordered_unique(per_query["method"])
    colors = _method_colors(methods)
    # Wide panels when there are many methods: fewer per row keeps the figure readable.
    n_cols = min(3 if len(methods) <= 8 else 2, len(measurements))
    n_rows = math.ceil(len(measurements) / n_cols)
    fig = Figure(figsize=(max(4.5, 0.6 * len(methods) + 1.5) * n_cols, 3.8 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    for ax, measurement in zip(axes.flat, measurements):
        panel = per_query[per_query["measurement"] == measurement]
        values, labels = [], []
        for method in methods:
            lds = panel.loc[panel["method"] == method, "lds"].to_numpy(dtype=float)
            finite = lds[np.isfinite(lds)]
            values.append(finite)
            excluded = len(lds) - len(finite)
            labels.append(f"{method}" + (f" ({excluded} NaN)" if excluded else ""))
        positions = np.arange(1, len(methods) + 1)
        kept = [i for i, v in enumerate(values) if len(v)]
        if kept:
            boxes = ax.boxplot([values[i] for i in kept], positions=positions[kept], widths=0.6, showfliers=False, patch_artist=True)
            for patch, i in zip(boxes["boxes"], kept):
                patch.set_facecolor(colors[methods[i]])
                patch.set_alpha(0.35)
        for i, v in enumerate(values):
            ax.scatter(positions[i] + rng.uniform(-0.15, 0.15, len(v)), v, s=8, color=colors[methods[i]], zorder=3)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=9)
        ax.set_title(str(measurement), fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("LDS of one query (Spearman)", fontsize=10)
    for ax in list(axes.flat)[len(measurements) :]:
        ax.set_visible(False)
    fig.suptitle("Per-query LDS (one dot per query)", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def plot_removal(summary: pd.DataFrame, path, measurement: str, orientation: str, unit: str) -> None:
    """Retraining without each ranker's top influences: the change of the
    measurement (removal model - all-data model of the same seed) and the
    distance of the regenerated query against the percentage removed.

    Args:
        summary: ``removal.summarize_changes`` output: columns ranker,
            fraction, change, change_se, image_l2, reference_image_l2.
        path: output PNG path.
        measurement, orientation, unit: of the measured quantity (labels).
    """
    _require_columns(summary, ["ranker", "fraction", "change", "change_se", "image_l2", "reference_image_l2"], "summary")
    rankers = _ordered_unique(summary["ranker"])
    colors = _method_colors(rankers)
    fig = Figure(figsize=(10.0, 4.2))
    left, right = fig.subplots(1, 2)
    for ranker in rankers:
        rows = summary[summary["ranker"] == ranker].sort_values("fraction")
        style = {"color": "grey", "linestyle": "--"} if ranker == RANDOM_CONTROL else {"color": colors[ranker]}
        left.errorbar(100 * rows["fraction"], rows["change"], yerr=rows["change_se"].fillna(0.0), marker="o", capsize=3, label=str(ranker), **style)
        if rows["image_l2"].notna().any():
            right.plot(100 * rows["fraction"], rows["image_l2"], marker="o", label=str(ranker), **style)
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set_xlabel("training examples removed (%)", fontsize=10)
    left.set_ylabel(f"change in {measurement} ({unit})\nremoval model - all-data model", fontsize=10)
    left.set_title(f"{measurement} of the query ({ORIENTATION_TEXT.get(orientation, orientation)}); mean +- SE", fontsize=10)
    left.grid(alpha=0.3)
    reference = summary["reference_image_l2"].dropna()
    if len(reference):
        right.axhline(float(reference.mean()), color="black", linestyle=":", label="all data, same seed")
    right.set_xlabel("training examples removed (%)", fontsize=10)
    right.set_ylabel("L2 distance to the original query", fontsize=10)
    right.set_title("regenerated from the same sampling noise", fontsize=10)
    right.grid(alpha=0.3)
    if not right.lines:
        right.text(0.5, 0.5, "no generated query among the removal queries", ha="center", va="center", transform=right.transAxes)
    percents = sorted(100 * summary["fraction"].unique())
    for ax in (left, right):
        ax.set_xticks(percents)
        ax.set_xticklabels([f"{p:g}" for p in percents])
        if len(percents) == 1:
            ax.set_xlim(percents[0] * 0.5, percents[0] * 1.5)
    fig.suptitle("Retraining without the top influences", fontsize=12)
    fig.tight_layout()
    handles, labels = left.get_legend_handles_labels()
    extra = [line for line in right.lines if line.get_label() == "all data, same seed"]
    fig.legend(handles + extra, labels + [line.get_label() for line in extra], title="ranked by", fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _save(fig, path)


def plot_lds_vs_value(frame: pd.DataFrame, path) -> None:
    """LDS against each method's damping or lambda, one panel per
    measurement, one line per method.

    Args:
        frame: ``SWEEP_COLUMNS`` (value > 0); one row per (method,
            measurement, value); ``hyperparameter`` names the value.
        path: output PNG path (parent folders are created).
    """
    if frame.empty and set(SWEEP_COLUMNS) <= set(frame.columns):
        # Only methods without a hyperparameter (similarity, random): say so.
        fig = Figure(figsize=(6, 2))
        fig.text(0.5, 0.5, "No method has a damping or lambda to sweep.", ha="center", va="center", fontsize=11)
        _save(fig, path)
        return
    _require_columns(frame, SWEEP_COLUMNS, "frame")
    if not (frame["value"] > 0).all():
        raise ValueError("every damping or lambda value must be > 0 for a logarithmic axis")
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
            rows = panel[panel["method"] == method].sort_values("value")
            if rows.empty:
                continue
            ax.plot(
                rows["value"],
                rows["lds"],
                marker="o",
                markersize=4,
                color=colors[method],
                label=str(method),
            )
            ax.fill_between(
                rows["value"],
                rows["ci_low"],
                rows["ci_high"],
                color=colors[method],
                alpha=0.2,
                linewidth=0,
            )
        ax.set_xscale("log")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(str(measurement), fontsize=11)
        ax.set_xlabel(" or ".join(_ordered_unique(panel["hyperparameter"])) + ", log scale", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(LDS_LABEL, fontsize=10)
    for ax in list(axes.flat)[len(measurements) :]:
        ax.set_visible(False)

    # One legend for the figure: the first line drawn for each method.
    handles = [next(l for a in axes.flat for l in a.lines if l.get_label() == str(method)) for method in methods]
    fig.legend(handles, [str(m) for m in methods], title="method", fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle("LDS against each method's damping or lambda (shaded: 95% bootstrap CI)", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def plot_paired_differences(paired: pd.DataFrame, path, values: str = "untuned, all queries") -> None:
    """LDS(row) - LDS(column) for every pair of methods, one heat map per
    measurement; ``*`` marks a difference whose Holm-adjusted p-value makes it
    significant.

    Args:
        paired: ``comparison.paired_differences`` rows with columns
            measurement, method_a, method_b, difference, significant (one
            ``values`` kind: each unordered pair once).
        path: output PNG path.
        values: which LDS values are compared, for the title.
    """
    columns = ["measurement", "method_a", "method_b", "difference", "significant"]
    if paired.empty:  # one method: nothing to compare, but the report still gets its figure
        missing = [c for c in columns if c not in paired.columns]
        if missing:
            raise ValueError(f"paired lacks columns {missing}")
        fig = Figure(figsize=(5.0, 1.5))
        fig.text(0.5, 0.5, "one method: no paired differences", ha="center", va="center")
        _save(fig, path)
        return
    _require_columns(paired, columns, "paired")
    measurements = _ordered_unique(paired["measurement"])
    methods = _ordered_unique(pd.concat([paired["method_a"], paired["method_b"]]))
    index = {m: k for k, m in enumerate(methods)}
    n = len(methods)
    limit = float(np.nanmax(np.abs(paired["difference"].to_numpy(dtype=float)))) or 1.0
    n_cols = min(2, len(measurements))
    n_rows = math.ceil(len(measurements) / n_cols)
    side = 0.42 * n + 1.6
    fig = Figure(figsize=(side * n_cols + 1.0, side * n_rows + 0.6))
    for p, measurement in enumerate(measurements):
        ax = fig.add_subplot(n_rows, n_cols, p + 1)
        grid = np.full((n, n), np.nan)
        marks = np.zeros((n, n), dtype=bool)
        for row in paired[paired["measurement"] == measurement].itertuples(index=False):
            a, b = index[row.method_a], index[row.method_b]
            grid[a, b], grid[b, a] = row.difference, -row.difference
            marks[a, b] = marks[b, a] = bool(row.significant)
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit)
        for a in range(n):
            for b in range(n):
                if np.isfinite(grid[a, b]):
                    ax.text(b, a, f"{grid[a, b]:.2f}" + ("*" if marks[a, b] else ""), ha="center", va="center", fontsize=6)
        ax.set_xticks(range(n))
        ax.set_xticklabels([str(m) for m in methods], rotation=90, fontsize=8)
        ax.set_yticks(range(n))
        ax.set_yticklabels([str(m) for m in methods], fontsize=8)
        ax.set_title(f"{measurement}: LDS(row) - LDS(column)", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"Paired LDS differences ({values}); * significant after Holm over the pairs", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
