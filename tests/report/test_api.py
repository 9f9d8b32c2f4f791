"""Tests for ldsbench.evaluate (ldsbench.report.api): the workflow's tables
from scores given in Python, and its input checks."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import ldsbench
from ldsbench.data.subsets import subsets_to_frame
from ldsbench.report.api import Evaluation
from ldsbench.runtime.io import save_parquet
from ldsbench.spec.config import validate_config
from workflow_api import tiny_config

QUICK = {"resamples": 100}


def _stored_scores(config, results) -> dict:
    """Every configured method's stored scores and sweep, in config order,
    in the form evaluate takes."""
    entries = {}
    for method in config["methods"]:
        entries[method] = {}
        for measurement in config["measurements"]:
            sweep = np.load(results / "scores" / method / f"{measurement}.sweep.npz")
            default = np.load(results / "scores" / method / f"{measurement}.npy")
            # The name of the swept value, as the workflow's LDS step recorded it.
            hyperparameter = pd.read_parquet(results / "lds" / method / f"{measurement}.sweep.parquet")["hyperparameter"].iloc[0]
            entries[method][measurement] = {"values": sweep["values"], "scores": np.stack([default, *sweep["scores"]]), "hyperparameter": hyperparameter}
    return entries


@pytest.mark.slow
def test_evaluate_gives_the_workflows_tables_bitwise(tiny_run):
    config, workdir = tiny_run
    results = workdir / config["results"]
    got = ldsbench.evaluate(_stored_scores(config, results), results, config=config)
    # gradient_passes is the plan's cost estimate, not a statistic of the scores.
    expected = pd.read_parquet(results / "lds_summary.parquet").drop(columns="gradient_passes")
    pd.testing.assert_frame_equal(got.summary, expected, check_exact=True)
    for table in ("paired", "per_query", "sweep"):
        pd.testing.assert_frame_equal(getattr(got, table), pd.read_parquet(results / f"lds_{table}.parquet"), check_exact=True)


@pytest.mark.slow
def test_a_users_method_is_paired_with_every_stored_method(tiny_run, tmp_path):
    config, workdir = tiny_run
    results = workdir / config["results"]
    copy = _stored_scores(config, results)["ekfac_influence"]
    got = ldsbench.evaluate({"mine": copy}, results, "loss", config=config, include_workflow_methods=True, statistics=QUICK)
    # Without score files, the stored methods' group predictions give the same tables.
    predictions_only = tmp_path / "results"
    for folder in ("ground_truth", "lds"):
        shutil.copytree(results / folder, predictions_only / folder)
    shutil.copy(results / "subsets.parquet", predictions_only)
    again = ldsbench.evaluate({"mine": copy}, predictions_only, "loss", config=config, include_workflow_methods=True, statistics=QUICK)
    pd.testing.assert_frame_equal(again.summary, got.summary, check_exact=True)
    assert list(got.summary["method"]) == ["mine", *config["methods"], "retraining_ceiling"]
    rows = got.summary.set_index("method")
    assert rows.loc["mine", "lds"] == rows.loc["ekfac_influence", "lds"]
    tuned = got.paired[got.paired["values"] == "tuned"]
    assert len(tuned) == len(config["methods"]) * (len(config["methods"]) + 1) // 2
    mine = tuned[tuned["method_a"] == "mine"]
    assert list(mine["method_b"]) == list(config["methods"])
    assert mine.set_index("method_b").loc["ekfac_influence", "difference"] == 0.0


N_TRAIN, N_QUERIES, N_SUBSETS, N_SEEDS = 12, 6, 4, 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A results folder and a bundle of the same synthetic ground truth, with
    the tiny config's shape (M = 4, K = 2, Q = 6)."""
    rng = np.random.default_rng(0)
    config = validate_config(tiny_config())
    mask = np.zeros((N_SUBSETS, N_TRAIN), dtype=bool)
    for j in range(N_SUBSETS):
        mask[j, rng.permutation(N_TRAIN)[: N_TRAIN // 2]] = True
    effect = rng.normal(size=(N_QUERIES, N_TRAIN))
    results = tmp_path_factory.mktemp("api") / "results"
    (results / "ground_truth").mkdir(parents=True)
    save_parquet(results / "subsets.parquet", subsets_to_frame(mask))
    for measurement in config["measurements"]:
        rows = [
            {"subset": j, "seed": k, "query": q, "value": float(mask[j] @ effect[q] + 0.1 * rng.normal())}
            for j in range(N_SUBSETS)
            for k in range(N_SEEDS)
            for q in range(N_QUERIES)
        ]
        save_parquet(results / "ground_truth" / f"{measurement}.parquet", pd.DataFrame(rows))
    bundle = results.parent / "bundle"
    shutil.copytree(results, bundle)
    (bundle / "manifest.json").write_text(json.dumps({"config": config}))
    return config, results, bundle, effect


def test_one_array_from_a_results_folder_or_a_bundle(folders):
    config, results, bundle, effect = folders
    from_results = ldsbench.evaluate(effect, results, config=config, statistics=QUICK)
    assert isinstance(from_results, Evaluation)
    assert list(from_results.summary["method"]) == ["method", "method", "retraining_ceiling", "retraining_ceiling"]
    assert list(from_results.summary["measurement"][:2]) == list(config["measurements"])
    assert from_results.paired.empty and from_results.sweep.empty
    assert len(from_results.per_query) == 2 * len(config["measurements"]) * N_QUERIES
    from_bundle = ldsbench.evaluate(effect, bundle, statistics=QUICK)
    pd.testing.assert_frame_equal(from_bundle.summary, from_results.summary, check_exact=True)


def test_a_grid_is_tuned_and_swept(folders):
    config, results, _, effect = folders
    noise = np.random.default_rng(1).normal(size=effect.shape)
    grid = {"values": [1.0, 10.0], "scores": np.stack([noise, effect]), "hyperparameter": "lambda"}
    got = ldsbench.evaluate({"grid": grid, "plain": noise}, results, "loss", config=config, statistics=QUICK)
    row = got.summary.set_index("method").loc["grid"]
    assert row["tuned_value"] == 10.0 and row["lds"] > row["default_lds"]
    assert list(got.sweep["value"]) == [1.0, 10.0] and set(got.sweep["hyperparameter"]) == {"lambda"}
    assert list(got.paired[["method_a", "method_b"]].itertuples(index=False, name=None)) == [("grid", "plain")] * 2


def test_sources_and_configs_are_checked(folders):
    config, results, bundle, effect = folders
    with pytest.raises(ValueError, match="does not store its config"):
        ldsbench.evaluate(effect, results)
    with pytest.raises(ValueError, match="carries its config"):
        ldsbench.evaluate(effect, bundle, config=config)
    with pytest.raises(ValueError, match="not one of the config's"):
        ldsbench.evaluate(effect, results, "fid", config=config)
    with pytest.raises(ValueError, match="holds no scores/"):
        ldsbench.evaluate(effect, results, config=config, include_workflow_methods=True)


@pytest.mark.parametrize(
    "scores, message",
    [
        (np.zeros((N_QUERIES + 1, N_TRAIN)), "'bad' on 'elbo' has 7 queries but the ground truth has 6"),
        (np.zeros(N_TRAIN), r"'bad' on 'elbo'.*one \[queries, training examples\] matrix"),
        (np.zeros((N_QUERIES, N_TRAIN + 1)), "'bad' on 'elbo' has 13 training examples but the subsets are drawn from 12"),
        (np.full((N_QUERIES, N_TRAIN), np.nan), "'bad' on 'elbo' holds non-finite scores"),
        ({"loss": np.zeros((N_QUERIES, N_TRAIN))}, r"'bad' has no scores for measurement \['elbo'\]"),
        ((np.ones((2, 1)), np.zeros((2, N_QUERIES, N_TRAIN))), "values must be a 1-D list"),
        (([1.0, 2.0, 3.0], np.zeros((2, N_QUERIES, N_TRAIN))), r"3 values need scores of shape \[3, queries, training examples\]"),
        (([1.0, np.nan], np.zeros((2, N_QUERIES, N_TRAIN))), "the values of a grid must be finite"),
        (([1.0, 1.0], np.zeros((2, N_QUERIES, N_TRAIN))), "the values repeat"),
        ({"values": [1.0], "scores": np.zeros((N_QUERIES, N_TRAIN)), "damping": 1.0}, "unknown keys"),
    ],
    ids=["queries", "1-D", "training examples", "NaN", "measurement missing", "2-D values", "values and scores", "NaN in grid", "repeat", "keys"],
)
def test_bad_scores_are_named(folders, scores, message):
    config, results, _, effect = folders
    # The checks run before any bootstrap; "good" fixes N for "bad".
    with pytest.raises(ValueError, match=message):
        ldsbench.evaluate({"good": effect, "bad": scores}, results, config=config, statistics=QUICK)
