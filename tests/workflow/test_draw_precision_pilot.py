"""`snakemake draw_precision` on a copy of the tiny benchmark's run: the pilot
measures what the benchmark measured, keeping each replicate, and runs
nothing else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_api import copy_run, dry_run, load_yaml, run_workflow

pytestmark = pytest.mark.slow


def test_the_pilot_keeps_the_replicates_of_the_benchmarks_measurements(tiny_run, tmp_path):
    config, workdir = tiny_run
    workdir = copy_run(workdir, tmp_path / "run")
    results = workdir / config["results"]
    planned = dry_run(config, workdir, ("draw_precision",))
    assert planned and all("/draw_precision/" in path for path in planned), planned
    result = run_workflow(config, workdir, "draw_precision")
    assert result.returncode == 0, result.stderr[-5000:]

    subsets, seeds = config["benchmark"]["subsets"], config["benchmark"]["seeds"]
    for measurement in config["measurements"]:
        truth = pd.read_parquet(results / "ground_truth" / f"{measurement}.parquet").set_index(["subset", "seed", "query"])["value"]
        for j in range(subsets):
            for k in range(seeds):
                archive = np.load(results / "draw_precision" / "replicates" / f"subset_{j}_seed_{k}.npz")
                replicates = archive[f"{measurement}.replicates"]
                if (j, k) == (0, 0):
                    (tmp_path / "first").mkdir(exist_ok=True)
                    np.save(tmp_path / "first" / f"{measurement}.npy", replicates)
                np.testing.assert_allclose(replicates.mean(axis=1), truth.loc[j, k].to_numpy(), rtol=1e-12)
    summary = pd.read_parquet(results / "draw_precision" / "summary.parquet").set_index("measurement")
    assert list(summary.index) == sorted(config["measurements"])
    assert (summary["pilot_subsets"] == subsets).all() and (summary["seeds"] == seeds).all()
    for measurement, settings in config["measurements"].items():
        assert summary.loc[measurement, "configured_draws"] == settings["draws"]
    per_query = pd.read_parquet(results / "draw_precision" / "per_query.parquet")
    assert len(per_query) == len(config["measurements"]) * (config["queries"]["generated"] + config["queries"]["heldout"])
    assert per_query["share"].between(0, 1).all()
    assert "configured_draws" in (results / "draw_precision" / "summary.md").read_text()

    # The recommendation as a config file: passed after the configuration it
    # changes the draws and nothing else, so the run measures every model
    # again and trains nothing.
    overlay = results / "draw_precision" / "measurements.yaml"
    recommended = summary["recommended_draws"].dropna()
    draws = {name: int(recommended.get(name, settings["draws"])) for name, settings in config["measurements"].items()}
    assert load_yaml(overlay) == {"measurements": {name: {"draws": count} for name, count in draws.items()}}
    assert list(load_yaml(overlay)["measurements"]) == list(config["measurements"])
    changed = [name for name, count in draws.items() if count != config["measurements"][name]["draws"]]
    assert changed, "the tiny benchmark's pilot recommends its configured draws: the check below would see no change"
    planned = run_workflow(config, workdir, "--configfile", str(workdir / "run_config.yaml"), str(overlay), "--dry-run", "--quiet", "rules")
    assert planned.returncode == 0, planned.stderr[-5000:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in planned.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert jobs["measure_model"] == subsets * seeds, planned.stdout
    assert not [rule for rule in jobs if rule.startswith(("train", "fit_", "project_", "score_"))], planned.stdout

    # A cheaper pilot: two replicates per query, which are the first two of the measurement's.
    fewer = {**config, "draw_precision": {"pilot_replicates": 2}}
    result = run_workflow(fewer, workdir, "draw_precision")
    assert result.returncode == 0, result.stderr[-5000:]
    archive = np.load(results / "draw_precision" / "replicates" / "subset_0_seed_0.npz")
    for measurement in config["measurements"]:
        kept = np.load(tmp_path / "first" / f"{measurement}.npy")
        np.testing.assert_allclose(archive[f"{measurement}.replicates"], kept[:, :2], rtol=1e-6)
    summary = pd.read_parquet(results / "draw_precision" / "summary.parquet").set_index("measurement")
    for measurement, settings in config["measurements"].items():
        assert summary.loc[measurement, "configured_draws"] == settings["draws"]
        assert summary.loc[measurement, "pilot_draws"] == 2 * int(archive[f"{measurement}.replicate_size"])
