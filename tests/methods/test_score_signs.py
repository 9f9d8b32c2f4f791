"""Every method's sign, checked by retraining.

tau(q, i) > 0 means including i raises m(q). So retraining without the
examples a method scores most positive must lower m(q) more than retraining
without as many random examples. A flipped sign would pick the examples
whose removal raises m(q) and fail this test.
"""

import copy

import numpy as np
import pytest
import torch

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.data.image_sets import load_digits_split
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules, build_scheduler
from ldsbench.diffusion.training import TrainingSettings, train_diffusion_model
from ldsbench.measurement.estimators import measure
from ldsbench.methods.influence import influence_scores
from ldsbench.methods.trak import trak_scores
from tiny_models import UNET

N_TRAIN, N_QUERIES, N_REMOVED, RANDOM_REPEATS = 32, 3, 8, 2
SETTINGS = TrainingSettings(steps=300, batch_size=16, learning_rate=2e-3, warmup_fraction=0.05, seed=0)
METHODS = ["ekfac_influence", "kfac_influence", "trak", "dtrak"]


def _train(images, tmp_path, tag):
    return train_diffusion_model(images, UNET, build_scheduler({}), SETTINGS, tmp_path / tag)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    tmp_path = tmp_path_factory.mktemp("signs")
    train, heldout = load_digits_split(N_TRAIN, N_QUERIES, seed=0)
    images, queries = torch.from_numpy(train.images), torch.from_numpy(heldout.images)
    scheduler = build_scheduler({})
    unet = _train(images, tmp_path, "full")
    scores = {}
    for kind in ("ekfac", "kfac"):
        model = FlatNoisePredictor(copy.deepcopy(unet)).double()
        names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
        data = NoisedTrainingData(images, scheduler, draws_per_example=16, seed=0)
        basis = fit_kronecker_eigenbasis(model, names, data, CurvatureSettings(kind=kind), num_data=data.num_data, batch_size_fn=batch_size_of)
        damping = 0.1 * basis.mean_eigenvalue()
        scores[f"{kind}_influence"] = influence_scores(
            unet, scheduler, images, queries, basis, [damping], measurement="loss", train_draws=32, query_draws=32, seed=0
        )[0]
    for name, output_fn in (("trak", "loss"), ("dtrak", "squared_norm")):
        scores[name] = trak_scores(
            unet,
            scheduler,
            images,
            queries,
            [1e-4],
            measurement="loss",
            output_fn=output_fn,
            projection_dim=512,
            projection_seed=0,
            train_draws=32,
            query_draws=32,
            seed=0,
        )[0]

    # Training is deterministic: methods that remove the same examples share one retraining.
    retrained = {}

    def retrained_measurement(removed, tag):
        key = tuple(sorted(int(i) for i in removed))
        if key not in retrained:
            keep = np.setdiff1d(np.arange(N_TRAIN), removed)
            model = _train(images[keep], tmp_path, tag)
            retrained[key] = measure(model, scheduler, queries, "loss", 512, seed=0)[0]
        return retrained[key]

    rng = np.random.default_rng(0)
    random_removal = np.mean([retrained_measurement(rng.choice(N_TRAIN, N_REMOVED, replace=False), f"random{r}") for r in range(RANDOM_REPEATS)], axis=0)
    return scores, retrained_measurement, random_removal


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_removing_most_positive_lowers_measurement(setup, method):
    scores, retrained_measurement, random_removal = setup
    changes = []
    for q in range(N_QUERIES):
        most_positive = np.argsort(scores[method][q])[-N_REMOVED:]
        changes.append(retrained_measurement(most_positive, f"{method}_q{q}")[q] - random_removal[q])
    assert np.mean(changes) < 0, f"{method}: removing its most positive examples changed m(q) by {changes} relative to random removal"
