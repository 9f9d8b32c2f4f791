"""The workflow as users drive it: a full-size dry run, one tiny real run of
every rule, and what a change of config reschedules afterwards."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from workflow_api import default_config, dry_run, run_workflow, with_changes

SUMMARY_FILES = [
    "lds_summary.parquet",
    "lds_per_query.parquet",
    "lds_sweep.parquet",
    "lds_paired.parquet",
    "lds_summary.png",
    "lds_paired.png",
    "lds_per_query.png",
    "lds_vs_damping.png",
    "lds_summary.md",
    "attribution_grid.png",
]
REMOVAL_FILES = ["removal_summary.parquet", "removal_summary.md", "removal.png", "removal_changes.parquet"]


def _count(files, pattern):
    return sum(bool(re.search(pattern, f)) for f in files)


def test_full_size_dry_run_schedules_every_retraining(tmp_path):
    config = with_changes(default_config(), {"benchmark.subsets": 100, "benchmark.seeds": 5})
    files = dry_run(config, tmp_path)
    assert _count(files, r"results/models/subset_\d+/seed_\d+$") == 500
    assert _count(files, r"results/models/full$") == 1
    assert _count(files, r"results/measurements/loss/subset_\d+_seed_\d+\.parquet$") == 500
    assert _count(files, r"results/curvature/.*\.pt$") == 1, "K-FAC and EK-FAC share one fit"
    # TRAK and the ensemble's first member share one feature file; D-TRAK, the second member and
    # Journey-TRAK (its authors' independent draws) have their own.
    assert _count(files, r"results/features/.*\.npy$") == 4
    assert _count(files, r"results/scores/[^/]+/loss\.npy$") == len(config["methods"])
    assert _count(files, r"results/comparison/loss\.parquet$") == 1, "one comparison of every method per measurement"


def test_methods_with_equal_curvature_share_factors(tmp_path):
    config = default_config()
    config["methods"]["ekfac_strong_damping"] = dict(config["methods"]["ekfac_influence"], damping=0.01)
    files = dry_run(config, tmp_path)
    assert _count(files, r"results/curvature/.*\.pt$") == 1
    # Other factor settings need a fit of their own.
    curvature = config["methods"]["kfac_influence"]["curvature"]
    config["methods"]["kfac_influence"]["curvature"] = dict(curvature, draws_per_example=curvature["draws_per_example"] + 4)
    assert _count(dry_run(config, tmp_path), r"results/curvature/.*\.pt$") == 2


@pytest.mark.slow
def test_tiny_run_writes_documented_outputs(tiny_run):
    config, workdir = tiny_run
    results = workdir / "results"
    for name in SUMMARY_FILES + REMOVAL_FILES:
        assert (results / name).stat().st_size > 0, name
    summary = pd.read_parquet(results / "lds_summary.parquet")
    assert list(summary.columns[:9]) == ["method", "measurement", "orientation", "n_subsets", "n_seeds", "folds", "lds", "ci_low", "ci_high"]
    expected = {"lds_over_ceiling", "query_agnostic_lds", "tuned_value", "tuned_values", "default_lds", "all_subsets_lds", "all_subsets_over_ceiling"}
    assert expected <= set(summary.columns)
    # Cross-fitted over 2 folds of queries and of subsets: each of the 2 x 2 cells chose a value.
    assert summary["folds"].eq(2).all()
    # Cost: gradient methods report passes; measured scoring times are in the
    # Markdown table only (the results files stay bitwise reproducible).
    methods = summary[summary["method"] != "retraining_ceiling"].set_index(["method", "measurement"])
    assert methods.loc["ekfac_influence", "gradient_passes"].gt(0).all() and methods.loc["random", "gradient_passes"].eq(0).all()
    assert "scoring_seconds" not in summary.columns and "| scoring s |" in (results / "lds_summary.md").read_text()
    trak = summary[summary["method"] == "trak"].iloc[0]
    grid = [config["methods"]["trak"]["lambda"], *config["methods"]["trak"]["lambda_grid"]]
    assert trak["tuned_value"] in grid and len(trak["tuned_values"].split()) == 4
    assert all(any(np.isclose(float(v), g, rtol=1e-2) for g in grid) for v in trak["tuned_values"].split())
    assert dict(zip(summary["measurement"], summary["orientation"])) == {"loss": "lower_is_better", "elbo": "higher_is_better"}
    assert set(summary["method"]) == set(config["methods"]) | {"retraining_ceiling"}
    # Percentile intervals need not contain their point estimate; they must be ordered.
    assert (summary["ci_low"] <= summary["ci_high"]).all() and summary[["ci_low", "ci_high"]].stack().between(-1, 1).all()
    assert (summary["lds"].between(-1, 1)).all()

    n_train, n_queries = config["dataset"]["n_train"], config["queries"]["generated"] + config["queries"]["heldout"]
    M, K = config["benchmark"]["subsets"], config["benchmark"]["seeds"]
    subsets = pd.read_parquet(results / "subsets.parquet")
    assert list(subsets.columns) == ["subset", "train_index"]
    assert len(subsets) == M * round(config["benchmark"]["fraction"] * n_train)
    truth = pd.read_parquet(results / "ground_truth" / "loss.parquet")
    assert {"subset", "seed", "query", "value"} <= set(truth.columns) and len(truth) == M * K * n_queries
    assert (truth["orientation"] == "lower_is_better").all()
    for method in config["methods"]:
        scores = np.load(results / "scores" / method / "loss.npy")
        assert scores.shape == (n_queries, n_train) and scores.dtype == np.float32
        assert np.isfinite(scores).all()
        checksums = json.loads((results / "scores" / method / "loss.json").read_text())
        assert set(checksums["files"]) == {"scores", "sweep"} and "queries_sha256" in checksums["provenance"]
    per_query = pd.read_parquet(results / "lds_per_query.parquet")
    assert list(per_query.columns) == ["method", "measurement", "query", "lds", "values"]
    assert set(per_query["values"]) == {"tuned", "default"} and len(per_query) == 2 * len(config["methods"]) * 2 * n_queries
    assert not list((results / "resume").rglob("checkpoint.pt")), "finished trainings leave no resume state"
    for log in ["prepare_data.log", "train/full.log", "summarize.log"]:
        assert (results / "logs" / log).stat().st_size > 0, log
    assert "training full model" in (results / "logs" / "train" / "full.log").read_text(), "a progress bar in the training log"
    # Every job has a log and a benchmark file.
    assert len(list((results / "benchmarks").rglob("*.tsv"))) == len(list((results / "logs").rglob("*.log")))


@pytest.mark.slow
def test_tiny_run_retrains_without_the_top_influences(tiny_run):
    config, workdir = tiny_run
    results, removal = workdir / "results", config["removal"]
    n_train = config["dataset"]["n_train"]
    k = round(removal["fractions"][0] * n_train)
    scores = np.load(results / "scores" / "ekfac_influence" / "loss.npy")
    removed = json.loads((results / "removal" / "sets" / "ekfac_influence" / "query_0" / "fraction_0.1.json").read_text())
    # The loss is lower-is-better: the proponents are the most negative scores.
    assert sorted(removed["removed"]) == sorted(np.argsort(scores[0])[:k].tolist())
    model = results / "removal" / "models" / "ekfac_influence" / "query_0" / "fraction_0.1" / "seed_1"
    manifest = json.loads((model / "manifest.json").read_text())
    assert sorted(set(range(n_train)) - set(manifest["train_rows"])) == sorted(removed["removed"])
    assert manifest["settings"]["steps"] == config["training"]["steps"]
    changes = pd.read_parquet(results / "removal_changes.parquet")
    assert len(changes) == 2 * removal["seeds"] and set(changes["ranker"]) == {"ekfac_influence", "random_control"}
    assert np.isfinite(changes["change"]).all() and (changes["k"] == k).all()
    # Query 0 is generated, so it is regenerated; the full model (seed 0)
    # regenerates it from its own noise up to float differences.
    reference = pd.read_parquet(results / "removal" / "measurements" / "all_data" / "seed_0.parquet")
    assert reference["image_l2"].iloc[0] < 1e-2
    assert (changes["image_l2"] > 0).all()
    summary = pd.read_parquet(results / "removal_summary.parquet")
    assert list(summary["ranker"]) == ["ekfac_influence", "random_control"]
    assert (summary["orientation"] == "lower_is_better").all()


@pytest.mark.slow
def test_tiny_run_models_load_with_diffusers(tiny_run):
    from diffusers import DDPMPipeline, UNet2DModel

    _, workdir = tiny_run
    model_dir = workdir / "results" / "models" / "subset_1" / "seed_0"
    pipeline = DDPMPipeline.from_pretrained(model_dir)
    assert isinstance(pipeline.unet, UNet2DModel)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["subset"] == 1 and manifest["seed"] == 0
    assert {"config_hash", "data_sha256", "versions", "weights_sha256"} <= set(manifest)
    subsets = pd.read_parquet(workdir / "results" / "subsets.parquet")
    assert manifest["train_rows"] == sorted(subsets.loc[subsets["subset"] == 1, "train_index"].tolist())


@pytest.mark.slow
def test_nothing_to_do_after_a_complete_run(tiny_run):
    config, workdir = tiny_run
    assert dry_run(config, workdir) == []


@pytest.mark.slow
def test_reordering_config_keys_reruns_nothing(tiny_run):
    config, workdir = tiny_run

    def reversed_keys(node):
        if isinstance(node, dict):
            return {key: reversed_keys(node[key]) for key in reversed(list(node))}
        return node

    reordered = reversed_keys(config)
    # The order of methods and measurements is the order of tables and figures.
    for section in ("methods", "measurements"):
        reordered[section] = {name: reversed_keys(config[section][name]) for name in config[section]}
    assert dry_run(reordered, workdir) == []


@pytest.mark.slow
def test_changing_one_method_reruns_only_that_method(tiny_run):
    config, workdir = tiny_run
    files = dry_run(with_changes(config, {"methods.trak.lambda_grid": [0.5]}), workdir)
    expected = {
        f"results/{path}"
        for m in config["measurements"]
        for path in (
            f"scores/trak/{m}.npy",
            f"scores/trak/{m}.sweep.npz",
            f"scores/trak/{m}.json",
            f"lds/trak/{m}.parquet",
            f"lds/trak/{m}.sweep.parquet",
            f"lds/trak/{m}.predictions.npz",
            # The comparison pairs every method, so it reruns with any of them.
            f"comparison/{m}.parquet",
            f"comparison/{m}.paired.parquet",
            f"comparison/{m}.per_query.parquet",
        )
    }
    assert expected <= set(files)
    others = set(files) - expected - {f"results/{name}" for name in SUMMARY_FILES}
    assert others == set(), f"changing trak rescheduled {sorted(others)}"


@pytest.mark.slow
def test_changing_training_draws_recomputes_only_that_methods_features(tiny_run):
    config, workdir = tiny_run
    files = dry_run(with_changes(config, {"methods.trak.train_draws": 4}), workdir)
    # New files for both ensemble members; Journey-TRAK keeps its own file.
    features = [path for path in files if re.search(r"results/features/.*\.npy$", path)]
    assert sorted(path.split("/")[-1].split("-")[0] for path in features) == ["full", "full_seed_1"]
    assert {path.split("/")[2] for path in files if path.startswith("results/scores/")} == {"trak"}
    assert _count(files, r"results/models/") == 0


@pytest.mark.slow
def test_changing_damping_does_not_refit_curvature(tiny_run):
    config, workdir = tiny_run
    files = dry_run(with_changes(config, {"methods.ekfac_influence.damping": 0.001}), workdir)
    assert "results/scores/ekfac_influence/loss.npy" in files
    assert _count(files, r"curvature/") == 0 and _count(files, r"results/models/") == 0
    # Its ranking may change, so the method's own removal models are retrained
    # (and nothing of the random control).
    assert _count(files, r"removal/models/ekfac_influence/") == config["removal"]["seeds"]
    assert _count(files, r"random_control") == 0


@pytest.mark.slow
def test_changing_training_reschedules_training(tiny_run):
    config, workdir = tiny_run
    files = dry_run(with_changes(config, {"training.subset_steps": 61}), workdir)
    assert _count(files, r"results/models/subset_\d+/seed_\d+$") == config["benchmark"]["subsets"] * config["benchmark"]["seeds"]
    assert "results/models/full" not in files, "the full model's training did not change"


@pytest.mark.slow
def test_report_is_one_html_file_with_every_figure(tiny_run, tmp_path):
    config, workdir = tiny_run
    report = tmp_path / "report.html"
    result = run_workflow(config, workdir, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    # Self-contained: the figures are embedded, nothing is fetched.
    for figure in ["lds_summary.png", "lds_per_query.png", "lds_vs_damping.png", "removal.png", "attribution_grid.png"]:
        assert figure in html, figure
    assert "Retraining without the top influences" in html and "most positive" in html
