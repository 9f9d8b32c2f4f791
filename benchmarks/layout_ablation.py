"""Every gradient method under every layout of its (t, eps) draws, each tuned
by cross-fitting, with its paired difference to its authors' layout.

    .venv/bin/python benchmarks/layout_ablation.py config > ablation.yaml       # the variants of config.yaml's methods
    .venv/bin/snakemake --cores 2 --configfile ablation.yaml                      # scores them on the finished run's models
    .venv/bin/python benchmarks/layout_ablation.py table                          # prints the table
    .venv/bin/snakemake --cores 2                                                 # the default's summary again

``config`` writes a config file that, merged over the workflow's config,
adds one method entry per gradient method and layout of ``LAYOUTS`` other
than the method's own default (its authors' layout, ``methods.METHOD_TYPES``
recipe), named ``{method}--{layout}``; nothing else changes, so Snakemake
reuses every model, measurement, curvature fit and feature file and runs
only the new scoring, LDS and comparison jobs. ``table`` reads the summary
and the paired differences of that run and prints, per measurement, method
and layout: the cross-fitted tuned LDS with its interval, and its paired
difference to the authors' layout (two-way bootstrap, every draw tuning
again) with Holm's correction over the differences printed, not over every
pair of methods in the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from ldsbench.evaluation.comparison import holm_adjusted, pair_difference
from ldsbench.spec.config import validate_config
from ldsbench.spec.method_types import GRADIENT_LAYOUTS

LAYOUTS = GRADIENT_LAYOUTS
SEPARATOR = "--"


def layout_name(layout: dict) -> str:
    return next((name for name, value in LAYOUTS.items() if value == layout), "custom")


def variants(config: dict) -> dict:
    """{name: method entry}: every gradient method of ``config`` (validated)
    under every layout but its own."""
    out = {}
    for name, method in config["methods"].items():
        if "gradient_draws" not in method:
            continue
        own = layout_name(method["gradient_draws"])
        for layout, settings in LAYOUTS.items():
            if layout == own:
                continue
            entry = {key: value for key, value in method.items() if key != "gradient_draws"}
            out[f"{name}{SEPARATOR}{layout}"] = {**entry, "gradient_draws": dict(settings)}
    return out


def write_config(args) -> None:
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # every entry written out in full
            return True

    yaml.dump({"methods": variants(config)}, sys.stdout, Dumper=Dumper, sort_keys=False, default_flow_style=None, width=160)


def print_table(args) -> None:
    results = Path(args.results)
    summary = pd.read_parquet(results / "lds_summary.parquet")
    paired = pd.read_parquet(results / "lds_paired.parquet")
    paired = paired[paired["values"] == "tuned"]
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    base = [name for name, method in config["methods"].items() if "gradient_draws" in method and SEPARATOR not in name]
    rows = []
    for measurement, group in summary.groupby("measurement", sort=False):
        lds = group.set_index("method")
        pairs = paired[paired["measurement"] == measurement]
        for method in base:
            own = layout_name(config["methods"][method]["gradient_draws"])
            for layout in LAYOUTS:
                name = method if layout == own else f"{method}{SEPARATOR}{layout}"
                if name not in lds.index:
                    continue
                row = {"measurement": measurement, "method": method, "layout": layout + (" (authors')" if layout == own else "")}
                row.update(lds=lds.at[name, "lds"], ci_low=lds.at[name, "ci_low"], ci_high=lds.at[name, "ci_high"], value=lds.at[name, "tuned_value"])
                if name != method:
                    pair = pair_difference(pairs, name, method)
                    row.update(difference=pair["difference"], diff_low=pair["ci_low"], diff_high=pair["ci_high"], p_value=pair["p_value"])
                rows.append(row)
    table = pd.DataFrame(rows)
    if "difference" not in table:
        raise SystemExit(f"{results / 'lds_summary.parquet'} holds no layout variant: run the workflow with `layout_ablation.py config` merged first")
    tested = table["p_value"].notna()
    table.loc[tested, "p_holm"] = holm_adjusted(table.loc[tested, "p_value"].to_numpy())
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"{int(tested.sum())} differences to the authors' layout; Holm over them")
    if args.wide:
        print_wide(table)
        return
    print("| measurement | method | layout | LDS, tuned [95% CI] | value | - authors' layout [95% CI] | p (Holm) |")
    print("|---|---|---|--:|--:|--:|--:|")
    for row in table.itertuples(index=False):
        difference = "" if pd.isna(row.difference) else f"{row.difference:+.2f} [{row.diff_low:+.2f}, {row.diff_high:+.2f}]"
        star = " *" if not pd.isna(row.p_holm) and row.p_holm < 0.05 else ""
        p_holm = "" if pd.isna(row.p_holm) else f"{row.p_holm:.2g}"
        value = "" if pd.isna(row.value) else f"{row.value:.0e}"
        print(
            f"| {row.measurement} | {row.method} | {row.layout} | {row.lds:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}] | {value} | {difference}{star} | {p_holm} |"
        )


def print_wide(table: pd.DataFrame) -> None:
    """One row per measurement and method, one column per layout: the tuned
    LDS, and below the authors' layout's column, the paired difference to it."""
    print("| measurement | method | " + " | ".join(f"`{layout}`" for layout in LAYOUTS) + " |")
    print("|---|---|" + "--:|" * len(LAYOUTS))
    for (measurement, method), rows in table.groupby(["measurement", "method"], sort=False):
        cells = []
        for layout in LAYOUTS:
            match = rows[rows["layout"].str.split().str[0] == layout]
            if match.empty:
                cells.append("")
                continue
            row = match.iloc[0]
            if pd.isna(row["difference"]):
                cells.append(f"**{row['lds']:.2f}**")
            else:
                star = "*" if row["p_holm"] < 0.05 else ""
                cells.append(f"{row['lds']:.2f} ({row['difference']:+.2f} [{row['diff_low']:+.2f}, {row['diff_high']:+.2f}]{star})")
        print(f"| {measurement} | {method} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml", help="the workflow's config (its methods are varied)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("config", help="print the config file of the variants")
    table = commands.add_parser("table", help="print the table of a finished run with the variants")
    table.add_argument("--results", default="results")
    table.add_argument("--out", default=None, help="also write the table to this CSV file")
    table.add_argument("--wide", action="store_true", help="one row per method, one column per layout (the authors' in bold)")
    args = parser.parse_args()
    {"config": write_config, "table": print_table}[args.command](args)


if __name__ == "__main__":
    main()
