"""Tests for ldsbench.report.plots and ldsbench.report.tables: figures are written, the markdown tables are complete."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from ldsbench.report.image_grid import extreme_examples, plot_attribution_grid, to_display
from ldsbench.report.plots import SWEEP_COLUMNS, plot_lds_per_query, plot_lds_summary, plot_lds_vs_value, plot_paired_differences, plot_removal
from ldsbench.report.tables import paired_markdown, removal_markdown, summary_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHODS = ["TRAK", "D-TRAK | ekfac", "retraining ceiling"]


def _row(method, measurement, lds, **extra):
    """A summary row as compare_methods writes it; every estimate has an interval."""
    row = dict(method=method, measurement=measurement, orientation="lower_is_better", n_queries=64, n_subsets=100, folds=2, n_seeds=3)
    for prefix, value in [
        ("lds", lds),
        ("lds_over_ceiling", lds / 0.8),
        ("query_agnostic_lds", lds / 2),
        ("default_lds", lds - 0.01),
        ("all_subsets_lds", lds),
    ]:
        low, high = ("ci_low", "ci_high") if prefix == "lds" else (f"{prefix}_ci_low", f"{prefix}_ci_high")
        row.update({prefix: value, low: value - 0.03, high: value + 0.05})
    row.update(tuned_value=1e-3, tuned_values="0.001 0.001 0.01 0.001")
    row.update(extra)
    return row


def _summary():
    rows = [_row(method, measurement, 0.1 + 0.2 * k + 0.05 * j) for k, method in enumerate(METHODS) for j, measurement in enumerate(["loss", "elbo_at_t500"])]
    # A method with an undefined LDS must not break the figure.
    rows.append(_row("constant", "loss", np.nan, n_queries=0))
    return pd.DataFrame(rows)


def _paired(summary):
    rows = []
    for measurement, group in summary.dropna(subset=["lds"]).groupby("measurement", sort=False):
        methods = group["method"].tolist()
        lds = dict(zip(group["method"], group["lds"]))
        for a in range(len(methods)):
            for b in range(a + 1, len(methods)):
                d = lds[methods[a]] - lds[methods[b]]
                rows.append(
                    dict(
                        method_a=methods[a],
                        method_b=methods[b],
                        difference=d,
                        ci_low=d - 0.1,
                        ci_high=d + 0.1,
                        p_value=0.01,
                        p_holm=0.03,
                        significant=abs(d) > 0.3,
                        measurement=measurement,
                        values="tuned",
                        split="cross_fit",
                    )
                )
    return pd.DataFrame(rows)


def _sweep_frame():
    rows = []
    for k, method in enumerate(METHODS[:2]):
        for measurement in ["loss", "elbo_at_t500"]:
            for damping in [1e-4, 1e-2, 1.0, 100.0]:
                lds = 0.3 + 0.1 * k - 0.02 * abs(np.log10(damping))
                rows.append(
                    dict(method=method, measurement=measurement, hyperparameter="damping", value=damping, lds=lds, ci_low=lds - 0.04, ci_high=lds + 0.04)
                )
    return pd.DataFrame(rows)


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_summary_plot_written(tmp_path):
    path = tmp_path / "figures" / "lds_summary.png"  # parent is created
    plot_lds_summary(_summary(), path)
    _assert_png(path)


def test_damping_plot_written(tmp_path):
    path = tmp_path / "lds_vs_damping.png"
    plot_lds_vs_value(_sweep_frame(), path)
    _assert_png(path)


def test_damping_plot_rejects_nonpositive_damping(tmp_path):
    frame = _sweep_frame()
    frame.loc[0, "value"] = 0.0
    with pytest.raises(ValueError, match="damping or lambda value must be > 0"):
        plot_lds_vs_value(frame, tmp_path / "x.png")


def test_summary_plot_requires_columns(tmp_path):
    with pytest.raises(ValueError, match="n_seeds"):
        plot_lds_summary(_summary().drop(columns="n_seeds"), tmp_path / "x.png")


def test_summary_markdown_lists_every_method():
    summary = _summary()
    text = summary_markdown(summary)
    for method in METHODS:
        assert method.replace("|", "\\|") in text
    assert "constant" in text
    lines = text.strip().splitlines()
    assert len(lines) == 2 + len(summary)  # header, separator, one line per row
    # First row: lds 0.1 with interval [0.07, 0.15], three decimals.
    assert "0.100 [0.070, 0.150]" in lines[2]
    assert "| n/a |" in lines[-1]
    # Every line has the same number of cells (escaped "|" does not split).
    n_cells = {line.replace("\\|", "").count("|") for line in lines}
    assert len(n_cells) == 1


def test_summary_markdown_shows_each_methods_cost():
    summary = _summary().assign(gradient_passes=1234567, scoring_seconds=12.3)
    summary.loc[0, ["gradient_passes", "scoring_seconds"]] = np.nan  # e.g. the ceiling
    lines = summary_markdown(summary).strip().splitlines()
    assert lines[0].endswith("| gradient passes | scoring s |")
    assert lines[3].endswith("| 1,234,567 | 12 |") and lines[2].endswith("|  |  |")


def test_per_query_plot_shows_nan_queries_in_the_label(tmp_path):
    rows = [
        dict(method=m, measurement=s, query=q, lds=(np.nan if (m == "TRAK" and q == 0) else 0.1 * q - 0.2))
        for m in METHODS
        for s in ["loss", "elbo"]
        for q in range(6)
    ]
    path = tmp_path / "per_query.png"
    plot_lds_per_query(pd.DataFrame(rows), path)
    _assert_png(path)


def _removal_summary():
    rows = []
    for ranker, slope in [("ekfac", 0.5), ("trak", 0.2), ("random_control", 0.0)]:
        for fraction, k in [(0.02, 5), (0.1, 26)]:
            rows.append(dict(ranker=ranker, fraction=fraction, k=k, change=slope * fraction, change_se=0.01, image_l2=1.0 + slope, reference_image_l2=0.8, n=4))
    return pd.DataFrame(rows)


def test_removal_plot_and_table(tmp_path):
    path = tmp_path / "removal.png"
    plot_removal(_removal_summary(), path, "loss", "lower_is_better", "squared error per pixel")
    _assert_png(path)
    table = removal_markdown(_removal_summary(), "squared error per pixel")
    assert table.count("\n") == 2 + 6
    assert "| ekfac | 2% (5) | 0.010 +- 0.010 | 1.500 | 0.800 | 4 |" in table


def test_removal_plot_without_generated_queries(tmp_path):
    summary = _removal_summary().assign(image_l2=np.nan, reference_image_l2=np.nan)
    path = tmp_path / "removal.png"
    plot_removal(summary, path, "elbo", "higher_is_better", "bits per dimension")
    _assert_png(path)


def test_summary_table_shows_orientation():
    summary = _summary().assign(orientation="higher_is_better")
    assert "| TRAK | loss | higher is better |" in summary_markdown(summary)


def test_paired_differences_plot_and_table(tmp_path):
    summary = _summary()
    paired = _paired(summary)
    path = tmp_path / "paired.png"
    plot_paired_differences(paired, path, values="tuned by cross-fitting")
    _assert_png(path)
    text = paired_markdown(summary, paired, 0.95)
    # Against the best method of each measurement, with its sign: TRAK is
    # 0.4 below the ceiling row here, a significant difference.
    assert "against the best method, retraining ceiling (tuned by cross-fitting" in text
    assert "| TRAK | -0.400 [-0.500, -0.300] * | 0.03 |" in text
    assert "| D-TRAK \\| ekfac | -0.200 [-0.300, -0.100] | 0.03 |" in text


def test_attribution_grid(tmp_path):
    rng = np.random.default_rng(0)
    queries, train = rng.uniform(-1, 1, (4, 1, 8, 8)), rng.uniform(-1, 1, (20, 1, 8, 8))
    scores = {"ekfac": rng.standard_normal((4, 20)), "trak": rng.standard_normal((4, 20))}
    path = tmp_path / "grid.png"
    plot_attribution_grid(queries, train, scores, [0, 3], 3, path, "loss")
    _assert_png(path)
    positive, negative = extreme_examples(np.array([0.1, -3.0, 2.0, 0.5]), 2)
    assert positive.tolist() == [2, 3] and negative.tolist() == [1, 0]
    assert to_display(np.full((1, 2, 2), -1.0)).shape == (2, 2) and to_display(np.ones((3, 2, 2))).shape == (2, 2, 3)


def test_a_single_method_has_no_pairs_but_a_figure(tmp_path):
    summary = _summary()
    summary = summary[summary["method"] == "TRAK"]
    paired = _paired(summary)
    assert paired.empty
    path = tmp_path / "paired.png"
    plot_paired_differences(paired.reindex(columns=["measurement", "method_a", "method_b", "difference", "significant"]), path)
    assert path.stat().st_size > 0
    assert (
        paired_markdown(
            summary, paired.reindex(columns=["measurement", "method_a", "method_b", "values", "difference", "ci_low", "ci_high", "p_holm", "significant"]), 0.95
        )
        == ""
    )


def test_sweep_figure_without_any_hyperparameter_says_so(tmp_path):
    # Only similarity and random methods: no damping or lambda to sweep.
    empty = pd.DataFrame(columns=SWEEP_COLUMNS)
    plot_lds_vs_value(empty, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
