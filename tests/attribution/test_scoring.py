"""Score formulas, checked term by term on a small UNet: the attributed
weights, the orientation (minus sign) and the 1/N of influence, and TRAK's
kernel without projection."""

import copy

import numpy as np
import pytest
import torch

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.attribution.scoring import SCORE_SIGN, query_gradients, training_gradient_batches
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules, attributed_parameters
from ldsbench.methods.influence import influence_scores
from ldsbench.methods.random_baseline import random_scores
from ldsbench.methods.trak import trak_scores
from tiny_models import tiny_model_and_images


@pytest.fixture(scope="module")
def setup():
    unet, scheduler, train, queries = tiny_model_and_images(6)
    return unet, scheduler, train, queries


def test_attributed_weights_are_linear_and_conv_weights_only(setup):
    unet = setup[0]
    modules = attributed_modules(unet)
    assert modules and all(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for _, m in modules)
    expected = sum(m.weight.numel() for m in unet.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert sum(p.numel() for p in attributed_parameters(unet)) == expected
    attributed = {id(p) for p in attributed_parameters(unet)}
    excluded = [n for n, p in unet.named_parameters() if id(p) not in attributed]
    assert any(n.endswith("bias") for n in excluded) and any("norm" in n for n in excluded)


def test_orientation_is_minus():
    assert SCORE_SIGN == -1.0


def test_influence_is_minus_one_over_n_preconditioned_dot_product(setup):
    unet, scheduler, train, queries = setup
    model = FlatNoisePredictor(copy.deepcopy(unet)).double()
    data = NoisedTrainingData(train, scheduler, draws_per_example=4, seed=0)
    names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
    basis = fit_kronecker_eigenbasis(model, names, data, CurvatureSettings(kind="ekfac"), num_data=data.num_data, batch_size_fn=batch_size_of)
    dampings = [1e-3, 1e-1]
    scores = influence_scores(unet, scheduler, train, queries, basis, dampings, measurement="loss", train_draws=4, query_draws=4, seed=0)
    assert scores.shape == (2, 2, 6)

    query_grads = query_gradients(unet, scheduler, queries, "loss", 4, seed=0)

    train_grads = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, train, "loss", 4, seed=0)])
    for index, damping in enumerate(dampings):
        expected = -(basis.solve(query_grads, damping) @ train_grads.double().T) / len(train)
        np.testing.assert_allclose(scores[index], expected.numpy(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("output_fn", ["loss", "squared_norm"])
def test_trak_without_projection_is_the_exact_kernel(setup, output_fn):
    unet, scheduler, train, queries = setup
    lam = 0.5
    scores = trak_scores(
        unet,
        scheduler,
        train,
        queries,
        [lam],
        measurement="loss",
        output_fn=output_fn,
        projection_dim=None,
        projection_seed=0,
        train_draws=4,
        query_draws=4,
        seed=0,
    )[0]

    phi = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, train, output_fn, 4, seed=0)]).double()
    q = query_gradients(unet, scheduler, queries, output_fn, 4, seed=0).double()
    # (Phi^T Phi + lam I)^{-1} Phi^T = Phi^T (Phi Phi^T + lam I)^{-1}: an N x N solve
    # instead of a P x P one.
    gram = phi @ phi.T + lam * torch.eye(len(phi), dtype=torch.float64)
    expected = -(q @ phi.T) @ torch.linalg.inv(gram)
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-3, atol=1e-8)


def test_random_scores_are_seeded():
    a, b, c = random_scores(3, 5, seed=1), random_scores(3, 5, seed=1), random_scores(3, 5, seed=2)
    assert a.shape == (1, 3, 5) and np.array_equal(a, b) and not np.array_equal(a, c)
