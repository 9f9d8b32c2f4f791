"""The contract of every registered method type, on the tiny benchmark's full
model: a scorer ``scorer(job) -> (values, scores)`` (``spec.method_types``)

- returns ``scored_values(method)`` (the default first, then its grid) and,
  for every measurement, finite float32 scores [L, Q, N];
- is deterministic: called here it gives its scoring job's score files bit
  for bit;
- keeps the sign convention: tau(q, i) predicts m(with i) - m(without i), so
  a training example used as a query lowers its own loss: its own score on
  the ``loss`` measurement is negative (where its query side is the
  measurement's gradient);
- follows the examples: reordering the training set reorders its scores
  (unless the registry says its scores do not depend on the images, or it
  replays the training run, whose batches followed the original order).

Every type in ``METHOD_TYPES`` is checked; a new type must appear in the
tiny benchmark (``tests/configs/tiny.yaml``) or in ``EXTRA_METHODS`` below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldsbench.data.image_sets import load_image_set
from ldsbench.runtime.fingerprints import folder_fingerprint
from ldsbench.runtime.jobs import load_model
from ldsbench.spec.config import validate_config
from ldsbench.spec.curvature_keys import curvature_key
from ldsbench.spec.feature_keys import feature_key, full_model_name
from ldsbench.spec.measurement_types import measurement_gradient_settings
from ldsbench.spec.method_types import METHOD_TYPES, ScoringJob, method_type, needs, query_follows_measurement, scored_values, scorer, training_feature_sets

pytestmark = pytest.mark.slow


class _PooledColours(torch.nn.Module):
    """A feature model for ``feature_similarity``: mean colour of the image."""

    def forward(self, images):
        return images.mean(dim=(2, 3))


def _feature_model(path):
    torch.jit.save(torch.jit.trace(_PooledColours().eval(), torch.zeros(2, 3, 4, 4)), str(path))
    return str(path)


def _score_file(path, results):
    """TRAK's default loss scores as a score file of another library would
    hold them: [N, Q], in the reported orientation, naming the benchmark."""
    scores = np.load(results / "scores" / "trak" / "loss.npy")
    np.savez(path, scores=(-scores).T, benchmark=np.array(folder_fingerprint(results)))
    return str(path)


# Types the tiny benchmark cannot run as configured: a feature model and a
# score file are local files, written here.
EXTRA_METHODS = {
    "feature_similarity": lambda tmp, results: {"type": "feature_similarity", "model_path": _feature_model(tmp / "encoder.pt"), "input_size": 4},
    "scores_file": lambda tmp, results: {
        "type": "scores_file",
        "path": _score_file(tmp / "trak_loss.npz", results),
        "layout": "train_by_query",
        "sign": "influence_as_reported",
    },
}


@pytest.fixture(scope="module")
def contract(tiny_run, tmp_path_factory):
    """(validated config, results folder, {type: method name}) of the tiny run."""
    config, workdir = tiny_run
    tmp = tmp_path_factory.mktemp("contract")
    results = workdir / config["results"]
    raw = {**config, "methods": {**config["methods"], **{f"contract_{t}": make(tmp, results) for t, make in EXTRA_METHODS.items()}}}
    validated = validate_config(raw)
    names = {}
    for name, method in validated["methods"].items():
        names.setdefault(method["type"], name)
    return validated, workdir / validated["results"], names


def _job(config, results, name, *, train=None, queries=None, queries_file=None, with_files=True) -> ScoringJob:
    method = config["methods"][name]
    if needs(method, "query_sampling"):
        method = {**method, "query_sampling": config["queries"]}
    unet, scheduler, manifest = load_model(results / "models" / "full")
    inputs = {"queries": str(queries_file or results / "queries" / "queries.npz"), "ensemble": [], "training_features": []}
    if needs(method, "curvature"):
        inputs["curvature"] = str(results / "curvature" / f"{curvature_key(method['curvature'])}.pt")
    if needs(method, "trajectory"):
        inputs["trajectory"] = str(results / "models" / "full_trajectory")
    if needs(method, "ensemble"):
        inputs["ensemble"] = [str(results / "models" / full_model_name(s)) for s in range(1, method["models"])]
    if with_files:
        inputs["training_features"] = [str(results / "features" / f"{feature_key(s)}.npy") for s in training_feature_sets(method)]
    training = {k: v for k, v in config["training"].items() if k != "subset_steps"} if needs(method, "training") else None
    return ScoringJob(
        unet=unet,
        scheduler=scheduler,
        train=torch.from_numpy(load_image_set(results / "data" / "train.npz").images) if train is None else train,
        queries=torch.from_numpy(np.load(results / "queries" / "queries.npz")["images"]) if queries is None else queries,
        method=method,
        measurements={m: measurement_gradient_settings(config["measurements"][m]) for m in sorted(config["measurements"])},
        inputs=inputs,
        training=training,
        device=torch.device("cpu"),
        draws_per_pass=config["runtime"]["gradient_draws_per_pass"],
        model_manifest=manifest,
        name=name,
        benchmark=folder_fingerprint(results),
    )


@pytest.mark.parametrize("type_name", sorted(METHOD_TYPES))
def test_scorer_keeps_the_contract(contract, type_name, tmp_path):
    config, results, names = contract
    assert type_name in names, f"method type {type_name!r} is in neither tests/configs/tiny.yaml nor EXTRA_METHODS"
    name = names[type_name]
    method = config["methods"][name]
    torch.set_num_threads(1)
    job = _job(config, results, name)
    values, scores = scorer(type_name)(job)

    # Values and shapes (an external method's scorer chooses its own values).
    if method_type(type_name).values_from_scorer:
        assert len(values) >= 1 and len(set(values)) == len(values)
    else:
        np.testing.assert_array_equal(np.asarray(values, dtype=np.float64), np.asarray(scored_values(method), dtype=np.float64))
    assert sorted(scores) == sorted(config["measurements"])
    for measurement, array in scores.items():
        assert array.dtype == np.float32 and array.shape == (len(values), len(job.queries), len(job.train)), measurement
        assert np.isfinite(array).all(), measurement

    # Deterministic: the scoring job's files, bit for bit.
    if not name.startswith("contract_"):
        for measurement, array in scores.items():
            on_disk = np.load(results / "scores" / name / f"{measurement}.npy")
            np.testing.assert_array_equal(array[0], on_disk, err_msg=f"{name} on {measurement} differs from its score file")

    if type_name == "scores_file":
        # TRAK's scores, turned back into the benchmark's layout and orientation.
        np.testing.assert_array_equal(scores["loss"][0], np.load(results / "scores" / "trak" / "loss.npy"))
    if not method_type(type_name).follows_examples:
        return
    # A method that attributes another output function (D-TRAK, Journey-TRAK)
    # defines no sign for the loss of an image.
    if query_follows_measurement(method):
        _check_own_examples_lower_their_loss(type_name, name, config, results, job, tmp_path)
    _check_permutation(type_name, name, method, config, results, job, scores)


def _check_own_examples_lower_their_loss(type_name, name, config, results, job, tmp_path):
    """The first training examples, used as held-out queries, get negative own scores on ``loss``."""
    own = job.train[:2].clone()
    queries_file = tmp_path / "own.npz"
    np.savez(queries_file, images=own.numpy(), kind=np.array(["heldout"] * 2), source_index=np.arange(2))
    _, own_scores = scorer(type_name)(_job(config, results, name, queries=own, queries_file=queries_file))
    diagonal = own_scores["loss"][0][np.arange(2), np.arange(2)]
    assert (diagonal < 0).all(), f"{name}: own-example scores on loss {diagonal} are not negative"


def _check_permutation(type_name, name, method, config, results, job, scores):
    """Reordering the training set reorders the scores (training side
    recomputed). A replay of the full model's training attributes the draws
    each example saw in the run, which saw the examples in their order."""
    if needs(method, "trajectory"):
        return
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(job.train)))
    _, permuted = scorer(type_name)(_job(config, results, name, train=job.train[order], with_files=False))
    for measurement, array in scores.items():
        expected = array[:, :, order.numpy()]
        np.testing.assert_allclose(permuted[measurement], expected, rtol=1e-4, atol=1e-5 * float(np.abs(array).max()), err_msg=f"{name} on {measurement}")


def test_extra_methods_are_registered_types():
    assert set(EXTRA_METHODS) <= set(METHOD_TYPES)
