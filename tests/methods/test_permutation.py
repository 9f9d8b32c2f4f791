"""Scores do not depend on the order of training examples or of queries.

Permuting the training images by pi and the queries by sigma must give the
score matrix S'[l, q, i] = S[l, sigma(q), pi(i)], for influence (K-FAC and
EK-FAC, curvature refitted on the permuted training set), TRAK and D-TRAK.
This holds because every Monte Carlo draw of an example is keyed by its
content (``noise.content_key``) rather than by its row, and the curvature
data visits examples in the order of their keys (so curvlinops' sampled
targets follow the examples too).

The random baseline is exempt: its scores are i.i.d. standard normal draws
that depend only on (Q, N, seed), never on the images, so a permutation of
the inputs leaves the matrix unchanged instead of permuting it. Its
distribution is exchangeable, so its expected LDS (0) is the same either
way.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.attribution.gradients import iter_example_gradients
from ldsbench.attribution.scoring import query_gradients, training_gradient_batches
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules, attributed_parameters, build_scheduler, build_unet
from ldsbench.diffusion.noise import Design, content_key, content_keys, design_draws, noise_draws
from ldsbench.diffusion.outputs import per_draw_output, timestep_probabilities
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.methods.influence import influence_scores
from ldsbench.methods.trak import trak_scores
from ldsbench.runtime.seeds import stream_seed
from tiny_models import UNET

N_TRAIN, N_QUERIES = 5, 3
DRAWS = dict(train_draws=3, query_draws=3, seed=0)


@pytest.fixture(scope="module")
def setup(one_thread):
    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET).eval(), build_scheduler({})
    generator = torch.Generator().manual_seed(1)
    train = torch.rand(N_TRAIN, 1, 8, 8, generator=generator) * 2 - 1
    queries = torch.rand(N_QUERIES, 1, 8, 8, generator=generator) * 2 - 1
    train_perm = torch.tensor([3, 0, 4, 1, 2])
    query_perm = torch.tensor([2, 0, 1])
    return unet, scheduler, train, queries, train_perm, query_perm


def _assert_permuted(permuted: np.ndarray, original: np.ndarray, train_perm, query_perm):
    """permuted [L, Q, N] == original[:, query_perm][:, :, train_perm] up to float error."""
    expected = original[:, query_perm.numpy()][:, :, train_perm.numpy()]
    scale = np.abs(original).max()
    assert scale > 0
    np.testing.assert_allclose(permuted, expected, rtol=1e-4, atol=1e-5 * scale)


# --- keys and draws --------------------------------------------------------------


def test_content_key_depends_on_content_only():
    image = torch.arange(-32, 32, dtype=torch.float32).reshape(1, 8, 8) / 32  # exact in float32
    key = content_key(image)
    assert 0 <= key < 2**62
    # Pinned: a change of the key function changes every draw of every method.
    assert key == content_key(image.clone()) == 2405967544605743565
    assert content_key(image.double()) == key, "a float64 copy of a float32 image has the same key"
    assert content_key(image.reshape(1, 4, 16)) != key, "the shape is part of the key"
    other = image.clone()
    other[0, 3, 4] += 1e-6
    assert content_key(other) != key
    assert content_keys(torch.stack([image, other])) == [key, content_key(other)]


def test_training_gradients_follow_the_example(setup):
    unet, scheduler, train, _, train_perm, _ = setup
    gradients = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, train, "loss", 3, seed=0, progress=False)])
    permuted = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, train[train_perm], "loss", 3, seed=0, batch_examples=2, progress=False)])
    torch.testing.assert_close(permuted, gradients[train_perm], rtol=1e-5, atol=1e-7)


def test_query_gradients_use_draws_keyed_by_content(setup):
    # The importance-sampled path (design_draws) of a measurement's gradient.
    unet, scheduler, _, queries, _, query_perm = setup
    output_fn = measurement_output_fn("simplified_elbo")
    grads = query_gradients(unet, scheduler, queries, output_fn, 4, seed=3, progress=False)
    stream = stream_seed(3, "query_gradient", "simplified_elbo")
    params = attributed_parameters(unet)
    for row, image in enumerate(queries):
        t, eps = design_draws(stream, content_key(image), 0, 4, tuple(image.shape), 1000, Design(), timestep_probabilities(output_fn, scheduler))
        value = per_draw_output(unet, scheduler, image.expand(4, -1, -1, -1), eps, t, output_fn).mean()
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])
        torch.testing.assert_close(grads[row], expected, rtol=1e-4, atol=1e-7)
    permuted = query_gradients(unet, scheduler, queries[query_perm], output_fn, 4, seed=3, progress=False)
    torch.testing.assert_close(permuted, grads[query_perm], rtol=1e-5, atol=1e-7)


def _pairs(data: NoisedTrainingData):
    """All (x_t, t, eps) of one pass, concatenated: ([M, C, H, W], [M], [M, D])."""
    batches = list(data)
    return (torch.cat([x["sample"] for x, _ in batches]), torch.cat([x["timestep"] for x, _ in batches]), torch.cat([y for _, y in batches]))


def test_curvature_data_is_independent_of_order_and_batch_size(setup):
    _, scheduler, train, _, train_perm, _ = setup
    reference = NoisedTrainingData(train, scheduler, draws_per_example=3, seed=0)
    for images, batch_size in ((train, 7), (train[train_perm], 256), (train[train_perm], 1)):
        data = NoisedTrainingData(images, scheduler, draws_per_example=3, seed=0, batch_size=batch_size)
        assert data.num_data == reference.num_data == 15
        for got, want in zip(_pairs(data), _pairs(reference)):
            assert torch.equal(got, want)
    # Each example's draws are its content-keyed draws.
    first = reference.order[0]
    t, eps = noise_draws(reference.stream, content_key(train[first]), 0, 3, (1, 8, 8), 1000)
    _, timesteps, targets = _pairs(reference)
    assert torch.equal(timesteps[:3], t) and torch.equal(targets[:3], eps.double().flatten(1))


def test_progress_bar_counts_examples_on_stderr(setup, capsys):
    unet, scheduler, train, _, _, _ = setup
    stream = stream_seed(0, "train_gradient", "loss")
    blocks = list(iter_example_gradients(unet, scheduler, train, "loss", 1, stream, batch_examples=2, desc="training gradients (loss)"))
    assert [rows for rows, _ in blocks] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    err = capsys.readouterr().err
    assert "training gradients (loss)" in err and f"{N_TRAIN}/{N_TRAIN}" in err
    list(iter_example_gradients(unet, scheduler, train, "loss", 1, stream, progress=False))
    assert capsys.readouterr().err == ""


# --- scores ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_influence_scores_permute_with_the_inputs(setup, kind):
    unet, scheduler, train, queries, train_perm, query_perm = setup
    names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
    # Default Monte Carlo GGN: curvlinops samples targets batch by batch from
    # one seeded generator, so this also checks the canonical batch order.
    settings = CurvatureSettings(kind=kind, fisher_type="mc")

    def scores(images, query_images):
        data = NoisedTrainingData(images, scheduler, draws_per_example=2, seed=0, batch_size=4)
        model = FlatNoisePredictor(copy.deepcopy(unet)).double()
        basis = fit_kronecker_eigenbasis(model, names, data, settings, num_data=data.num_data, batch_size_fn=batch_size_of)
        damping = 0.1 * basis.mean_eigenvalue()
        return influence_scores(unet, scheduler, images, query_images, basis, [damping, 10 * damping], measurement="loss", **DRAWS)

    original = scores(train, queries)
    assert original.shape == (2, N_QUERIES, N_TRAIN)
    _assert_permuted(scores(train[train_perm], queries[query_perm]), original, train_perm, query_perm)


@pytest.mark.parametrize(("output_fn", "measurement"), [("loss", "simplified_elbo"), ("squared_norm", "loss")], ids=["trak", "dtrak"])
@pytest.mark.parametrize("projection_dim", [None, 32])
def test_trak_scores_permute_with_the_inputs(setup, output_fn, measurement, projection_dim):
    unet, scheduler, train, queries, train_perm, query_perm = setup

    def scores(images, query_images):
        return trak_scores(
            unet,
            scheduler,
            images,
            query_images,
            [1e-3, 1e-1],
            measurement=measurement,
            output_fn=output_fn,
            projection_dim=projection_dim,
            projection_seed=0,
            **DRAWS,
        )

    _assert_permuted(scores(train[train_perm], queries[query_perm]), scores(train, queries), train_perm, query_perm)
