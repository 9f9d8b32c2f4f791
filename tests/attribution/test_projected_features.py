"""Projected training features computed once and read by every method that
asks for the same set: the file gives exactly the scores the method computes
on its own; a file of another model, settings or device type, or a changed
file, is refused; equal settings share one file name and the plan counts
each method's feature passes."""

import json

import numpy as np
import pytest
import torch

from ldsbench.attribution.projected_features import features_of, load_training_features, save_training_features
from ldsbench.planning.plan import method_passes, rule_estimates
from ldsbench.runtime.jobs import load_model, save_model
from ldsbench.runtime.provenance import ArtifactMismatchError, CorruptedArtifactError
from ldsbench.spec.config import validate_config
from ldsbench.spec.feature_keys import feature_key, projected_feature_sets
from ldsbench.spec.method_types import ScoringJob, scorer, training_feature_sets
from tiny_models import tiny_model_and_images
from workflow_api import default_config

pytestmark = pytest.mark.usefixtures("one_thread")

PROJECTED = {"projection_dim": 32, "projection": "rademacher", "train_draws": 4, "query_draws": 4, "seed": 0, "gradient_draws": None}
TRAK = {"type": "trak", "output_fn": "loss", "lambda": 1e-3, "lambda_grid": [1.0], "lambda_scale": "absolute", "models": 1, **PROJECTED}
JOURNEY = {
    "type": "journey_trak",
    "steps": 2,
    "draws_per_step": 2,
    "lambda": 1e-3,
    "lambda_grid": [],
    "lambda_scale": "absolute",
    "query_sampling": {"generated": 1, "sampling_steps": 10, "seed": 0},
    **{k: v for k, v in PROJECTED.items() if k != "query_draws"},
}
MEASUREMENTS = {"loss": {"type": "loss"}, "elbo": {"type": "elbo", "levels": 17}}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(folder, unet, scheduler, manifest, train, queries, queries file) of a saved tiny model."""
    folder = tmp_path_factory.mktemp("features")
    unet, scheduler, train, queries = tiny_model_and_images(5, 2)
    save_model(unet, scheduler, folder / "full", {})
    unet, scheduler, manifest = load_model(folder / "full")
    np.savez(folder / "queries.npz", images=queries.numpy(), kind=np.array(["generated", "heldout"]))
    return folder, unet, scheduler, manifest, train, queries, str(folder / "queries.npz")


def _write_features(model, settings, name="features"):
    folder, unet, scheduler, manifest, train, _, _ = model
    path, manifest_path = folder / f"{name}.npy", folder / f"{name}.json"
    # The job's own batch (all 5 examples): float32 products of another
    # batch shape round differently (``test_features_do_not_depend_on_the_batch_size``).
    features = features_of(unet, scheduler, train, settings, batch_examples=5)
    save_training_features(path, manifest_path, features, settings, {"weights_sha256": manifest["weights_sha256"]})
    return path, manifest_path


@pytest.mark.parametrize("method", [TRAK, dict(TRAK, output_fn="squared_norm"), JOURNEY], ids=["trak", "dtrak", "journey"])
def test_scores_from_a_feature_file_equal_scores_computed_in_the_job(model, method):
    folder, unet, scheduler, manifest, train, queries, queries_path = model
    (settings,) = training_feature_sets(method)
    path, _ = _write_features(model, settings, name=f"features-{method['type']}-{method.get('output_fn')}")
    inputs = {"queries": queries_path}
    alone = ScoringJob(unet, scheduler, train, queries, method, MEASUREMENTS, inputs, device=torch.device("cpu"), model_manifest=manifest)
    reading = ScoringJob(
        unet, scheduler, train, queries, method, MEASUREMENTS, {**inputs, "training_features": [str(path)]}, device=torch.device("cpu"), model_manifest=manifest
    )
    values, computed = scorer(method["type"])(alone)
    values_read, read = scorer(method["type"])(reading)
    assert values == values_read
    for name in MEASUREMENTS:
        assert np.abs(computed[name]).max() > 0
        np.testing.assert_array_equal(read[name], computed[name])


def test_features_do_not_depend_on_the_batch_size(model):
    # Draws are keyed by each example's content: batching changes only the
    # summation order of float32 products.
    _, unet, scheduler, _, train, _, _ = model
    settings = projected_feature_sets(TRAK, "loss")[0]
    small, large = (features_of(unet, scheduler, train, settings, batch_examples=b) for b in (2, 5))
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-5 * float(large.abs().max()))


def test_a_feature_file_of_another_model_settings_or_device_is_refused(model, tmp_path):
    _, _, _, manifest, _, _, _ = model
    settings = projected_feature_sets(TRAK, "loss")[0]
    path, manifest_path = _write_features(model, settings, name="checked")
    load = dict(model_manifest=manifest, settings=settings, device="cpu")
    assert load_training_features(path, manifest_path, **load).shape == (5, 32)

    other_model = {**manifest, "weights_sha256": {"unet/diffusion_pytorch_model.safetensors": "0" * 64}}
    with pytest.raises(ArtifactMismatchError, match="weights_sha256"):
        load_training_features(path, manifest_path, **{**load, "model_manifest": other_model})
    with pytest.raises(ArtifactMismatchError, match="settings"):
        load_training_features(path, manifest_path, **{**load, "settings": dict(settings, train_draws=8)})

    recorded = json.loads(manifest_path.read_text())
    recorded["provenance"]["device_type"] = "cuda"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(recorded))
    with pytest.raises(ArtifactMismatchError, match="projected on cuda, this scoring job runs on cpu"):
        load_training_features(path, elsewhere, **load)

    changed = tmp_path / "changed.npy"
    changed.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    recorded["provenance"]["device_type"] = "cpu"
    recorded["files"]["features"]["file"] = changed.name
    (tmp_path / "changed.json").write_text(json.dumps(recorded))
    with pytest.raises(CorruptedArtifactError, match="does not match the checksum"):
        load_training_features(changed, tmp_path / "changed.json", **load)


def test_methods_with_the_same_training_side_share_one_feature_key():
    config = validate_config(default_config())
    methods = config["methods"]
    keys = {name: [feature_key(s) for s in training_feature_sets(m)] for name, m in methods.items()}
    # TRAK and the ensemble's first member: the full model's projected loss
    # gradients; Journey-TRAK's are the same but at its authors' independent draws.
    assert keys["trak"][0] == keys["trak_ensemble"][0] != keys["journey_trak"][0]
    journey_at_traks_layout = dict(methods["journey_trak"], gradient_draws=methods["trak"]["gradient_draws"])
    assert feature_key(training_feature_sets(journey_at_traks_layout)[0]) == keys["trak"][0]
    assert keys["trak_ensemble"][1].startswith("full_seed_1-loss-") and keys["dtrak"][0].startswith("full-squared_norm-")
    assert keys["ekfac_influence"] == keys["das"] == keys["pixel_similarity"] == []
    # A method's own hyperparameter or query side is not part of the key; its training draws are.
    assert training_feature_sets(dict(methods["trak"], lambda_grid=[5.0], query_draws=8)) == training_feature_sets(methods["trak"])
    assert feature_key(training_feature_sets(dict(methods["trak"], train_draws=8))[0]) != keys["trak"][0]


def test_plan_counts_feature_jobs_once_and_each_method_its_features(tmp_path):
    from ldsbench.planning.footprint import cached_model_footprint

    config = validate_config(default_config())
    footprint = cached_model_footprint(config["model"]["unet"], tmp_path)
    rows = {row.rule: row for row in rule_estimates(config, footprint, 2**34, "runtime.memory_gb")}
    feature_rows = [rule for rule in rows if rule.startswith("project_training_features[")]
    assert len(feature_rows) == 4
    n_train, draws = config["dataset"]["n_train"], config["methods"]["trak"]["train_draws"]
    assert all(rows[rule].passes == n_train * draws for rule in feature_rows)
    n_queries = config["queries"]["generated"] + config["queries"]["heldout"]
    # TRAK's scoring job: query gradients of both measurements only; its cost adds its features.
    assert rows["score_method[trak]"].passes == 2 * n_queries * config["methods"]["trak"]["query_draws"]
    assert method_passes("trak", config, rows) == rows["score_method[trak]"].passes + n_train * draws
    assert method_passes("trak_ensemble", config, rows) == rows["score_method[trak_ensemble]"].passes + 2 * n_train * draws
