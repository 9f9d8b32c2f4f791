"""One scoring job scores a method for every measurement at once: each
measurement's scores must equal those of scoring it alone, whatever the
other measurements, and measurements that share a query gradient share it."""

import copy

import numpy as np
import pytest
import torch

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis, save_eigenbases
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules
from ldsbench.diffusion.training import TrainingSettings, snapshot_steps
from ldsbench.spec.measurement_types import query_output_groups
from ldsbench.spec.method_types import ScoringJob, scorer
from tiny_models import tiny_model_and_images

pytestmark = pytest.mark.usefixtures("one_thread")

# Two measurements with their own query gradient, and one (simplified_elbo
# named twice) whose two names share one.
MEASUREMENTS = {
    "loss": {"type": "loss"},
    "elbo": {"type": "elbo", "levels": 17},
    "selbo": {"type": "simplified_elbo"},
    "selbo_again": {"type": "simplified_elbo"},
}
PROJECTED = {"projection_dim": 32, "projection": "rademacher", "lambda_scale": "absolute", "train_draws": 2, "query_draws": 2, "seed": 0}
METHODS = {
    "influence": {
        "type": "influence",
        "damping": 1e-3,
        "damping_grid": [1e-1],
        "train_draws": 2,
        "query_draws": 2,
        "seed": 0,
        "modules": None,
        "query_storage": "float64",
        "curvature": {"kind": "ekfac"},
    },
    "trak": {"type": "trak", "output_fn": "loss", "lambda": 1e-3, "lambda_grid": [1.0], **PROJECTED},
    "dtrak": {"type": "trak", "output_fn": "squared_norm", "lambda": 1e-3, "lambda_grid": [], **PROJECTED},
    "tracin": {"type": "tracin", "normalize": False, "draws_per_checkpoint": 2, "query_draws": 2, "seed": 0},
    "pixel_similarity": {"type": "pixel_similarity", "metric": "cosine", "sign": None},
    "random": {"type": "random", "seed": 0},
}
TRAINING = {"steps": 4, "batch_size": 3, "learning_rate": 0.01, "checkpoint_every": 2, "seed": 4}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    unet, scheduler, train, queries = tiny_model_and_images(5, 3)
    model = FlatNoisePredictor(copy.deepcopy(unet)).double()
    data = NoisedTrainingData(train, scheduler, draws_per_example=2, seed=0)
    names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
    basis = fit_kronecker_eigenbasis(model, names, data, CurvatureSettings(kind="ekfac"), num_data=data.num_data, batch_size_fn=batch_size_of)
    save_eigenbases(folder / "curvature.pt", {"ekfac": basis})
    trajectory = folder / "trajectory"
    trajectory.mkdir()
    steps = snapshot_steps(TrainingSettings.from_config(TRAINING))
    (trajectory / "trajectory.json").write_text(f'{{"steps": {steps}}}')
    for step in steps:
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(0.001 * torch.randn_like(p))
        torch.save(copy.deepcopy(unet.state_dict()), trajectory / f"step_{step}.pt")
    return unet, scheduler, train, queries, {"curvature": str(folder / "curvature.pt"), "trajectory": str(trajectory)}


def _score(inputs, method, measurements):
    unet, scheduler, train, queries, paths = inputs
    job = ScoringJob(copy.deepcopy(unet), scheduler, train, queries, method, measurements, paths, training=TRAINING, device=torch.device("cpu"))
    return scorer(method["type"])(job)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_measurement_scores_as_if_scored_alone(inputs, name):
    method = METHODS[name]
    values, together = _score(inputs, method, MEASUREMENTS)
    assert set(together) == set(MEASUREMENTS)
    for measurement, settings in MEASUREMENTS.items():
        alone_values, alone = _score(inputs, method, {measurement: settings})
        np.testing.assert_array_equal(alone_values, values)
        assert together[measurement].shape == (len(values), 3, 5)
        # Stacking changes the shapes of float32 matrix products, so their
        # summation order: equal up to float32 rounding on the scores' scale.
        scale = float(np.abs(alone[measurement]).max())
        np.testing.assert_allclose(together[measurement], alone[measurement], rtol=1e-5, atol=2e-5 * scale)
    np.testing.assert_array_equal(together["selbo"], together["selbo_again"])


def test_query_gradients_follow_the_measurement(inputs):
    # Not a vacuous equality: influence scores differ between measurements.
    _, scores = _score(inputs, METHODS["influence"], MEASUREMENTS)
    assert not np.allclose(scores["loss"], scores["elbo"])


def test_measurements_group_by_gradient_settings():
    groups = query_output_groups(MEASUREMENTS)
    assert [names for _, names in groups] == [["loss"], ["elbo"], ["selbo", "selbo_again"]]
