"""Influence against exact retraining, on a linear denoiser with a closed form.

The linear noise predictor of ``tests/linear_denoiser.py`` is trained on
fixed draws, so retraining on any subset is one linear solve and the
ground truth of the LDS has no seed or Monte Carlo noise. This pins:

* the exact Hessian I_D (x) K is that of the documented training objective
  (as computed by ``ldsbench.diffusion.outputs.simplified_loss``);
* influence with that Hessian is the exact derivative of the retrained
  measurement in an example's weight (sign and 1/N of ``ldsbench.attribution.scoring``)
  and reaches an LDS near 1 on half-size subsets (``ldsbench.data.subsets``,
  ``ldsbench.evaluation.lds``);
* the package's K-FAC / EK-FAC (type-2) curvature equals that Hessian with
  no rescaling, so the damping is absolute on the same scale, and the
  package's ``influence_scores`` equals the exact scores.

Digits 8x8 (D = 64, Z = 131, P = 8384 weights), N = 512, float64.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import linear_denoiser as ld
from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.attribution.curvature_data import batch_size_of
from ldsbench.attribution.scoring import query_gradients, training_gradient_batches
from ldsbench.data.image_sets import load_digits_split
from ldsbench.data.subsets import sample_subsets
from ldsbench.diffusion.model import FlatNoisePredictor, build_scheduler
from ldsbench.diffusion.noise import content_keys
from ldsbench.diffusion.outputs import simplified_loss
from ldsbench.evaluation.lds import lds_per_query
from ldsbench.methods.influence import influence_scores
from ldsbench.runtime.seeds import stream_seed

pytestmark = pytest.mark.usefixtures("one_thread")

# N S = 8192 (example, draw) rows against Z = 131 features: the curvature of
# a random half-subset stays close to half the full one (relative spread of
# order sqrt(Z / (N S))), which is what makes a first-order prediction of
# removing half the data rank the subsets almost exactly (observed LDS 0.960;
# about 0.93 with S = 8, 0.88 with N = 256).
N_TRAIN, N_QUERIES = 512, 16
TRAIN_DRAWS, QUERY_DRAWS = 16, 64
N_SUBSETS, FRACTION = 40, 0.5
SEED = 0
# Ridge = damping: the untuned value of Mlodozeniec et al. It is about 1/500 of K's
# smallest eigenvalue (5.5e-6), and since retraining and influence use
# the same value, influence sees the exact Hessian of the objective retrained.
RIDGE = 1e-8
DAMPINGS = [0.0, RIDGE, 1e-4, 1e-1]
MODULE = "unet.linear"


@pytest.fixture(scope="module")
def problem():
    scheduler = build_scheduler({})
    abar = scheduler.alphas_cumprod.double()
    num_timesteps = scheduler.config.num_train_timesteps
    train, heldout = load_digits_split(N_TRAIN, N_QUERIES, seed=SEED)
    images = torch.from_numpy(train.images).double()
    queries = torch.from_numpy(heldout.images).double()
    shape = tuple(images.shape[1:])
    num_pixels = int(np.prod(shape))

    # The streams and item keys of ldsbench.attribution.scoring for the "loss" output
    # function: the closed form is trained and measured on exactly the draws
    # whose gradients influence_scores computes.
    train_t, train_eps = ld.fixed_draws(stream_seed(SEED, "train_gradient", "loss"), content_keys(images), TRAIN_DRAWS, shape, num_timesteps)
    query_t, query_eps = ld.fixed_draws(stream_seed(SEED, "query_gradient", "loss"), content_keys(queries), QUERY_DRAWS, shape, num_timesteps)
    z, eps = ld.draw_features(images, train_t, train_eps, abar)
    zq, epsq = ld.draw_features(queries, query_t, query_eps, abar)
    stats = ld.draw_statistics(z, eps)
    weight = ld.fit(stats, torch.ones(N_TRAIN, dtype=torch.float64), RIDGE)
    factor = ld.hessian_factor(stats.zz, num_pixels)
    return SimpleNamespace(
        scheduler=scheduler,
        abar=abar,
        images=images,
        queries=queries,
        shape=shape,
        num_pixels=num_pixels,
        train_t=train_t,
        train_eps=train_eps,
        z=z,
        eps=eps,
        zq=zq,
        epsq=epsq,
        stats=stats,
        weight=weight,
        factor=factor,
        train_grads=ld.example_gradients(weight, z, eps),
        query_grads=ld.example_gradients(weight, zq, epsq),
    )


@pytest.fixture(scope="module")
def bases(problem):
    """kind -> Kronecker eigenbasis fitted by the package on the closed form's
    draws (type-2 Fisher: the exact GGN, which for W z under MSE is H)."""
    p, fitted = problem, {}

    def fit_basis(kind):
        if kind not in fitted:
            model = FlatNoisePredictor(ld.LinearDenoiser(p.abar, p.shape, p.weight))
            data = ld.FixedDrawData(p.images, p.train_t, p.train_eps, p.abar)
            fitted[kind] = fit_kronecker_eigenbasis(
                model,
                [MODULE],
                data,
                CurvatureSettings(kind=kind, fisher_type="type-2"),
                num_data=data.num_data,
                batch_size_fn=batch_size_of,
            )
        return fitted[kind]

    return fit_basis


def package_objective(p, model, weights=None):
    """(1/N) sum_i w_i loss_i with loss_i from ``diffusion.simplified_loss``."""
    x0 = p.images.repeat_interleave(TRAIN_DRAWS, dim=0)
    per_draw = simplified_loss(model, p.scheduler, x0, p.train_eps.flatten(0, 1), p.train_t.reshape(-1))
    per_example = per_draw.view(N_TRAIN, TRAIN_DRAWS).mean(dim=1)
    if weights is not None:
        per_example = per_example * weights
    return per_example.sum() / N_TRAIN


def test_closed_form_is_the_minimiser_of_the_package_objective(problem):
    p = problem
    mask = torch.from_numpy(sample_subsets(N_TRAIN, 1, FRACTION, SEED)[0]).double()
    for weights in (None, mask):
        fitted = ld.fit(p.stats, torch.ones(N_TRAIN, dtype=torch.float64) if weights is None else weights, RIDGE)
        model = ld.LinearDenoiser(p.abar, p.shape, fitted)
        objective = package_objective(p, model, weights) + RIDGE / 2 * model.linear.weight.pow(2).sum()
        (grad,) = torch.autograd.grad(objective, model.linear.weight)
        # Stationary to round-off next to one example's gradient (observed 2e-16 vs 4e-2).
        assert grad.abs().max().item() < 1e-12 * p.train_grads.abs().max().item()
    # The per-example losses are the package's loss on the same draws.
    model = ld.LinearDenoiser(p.abar, p.shape, p.weight)
    with torch.no_grad():
        x0 = p.images.repeat_interleave(TRAIN_DRAWS, dim=0)
        package = simplified_loss(model, p.scheduler, x0, p.train_eps.flatten(0, 1), p.train_t.reshape(-1)).view(N_TRAIN, TRAIN_DRAWS).mean(1)
    torch.testing.assert_close(ld.example_losses(p.weight, p.z, p.eps), package, rtol=1e-12, atol=1e-14)


def test_exact_hessian_is_that_of_the_package_objective(problem):
    p = problem
    model = ld.LinearDenoiser(p.abar, p.shape, p.weight)
    (grad,) = torch.autograd.grad(package_objective(p, model), model.linear.weight, create_graph=True)
    directions = torch.randn(3, *p.weight.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for v in directions:
        (hv,) = torch.autograd.grad((grad * v).sum(), model.linear.weight, retain_graph=True)
        # (I_D (x) K) vec_row(V) = vec_row(V K): K carries 2 / D and the mean over examples and draws.
        torch.testing.assert_close(hv, v @ p.factor, rtol=1e-10, atol=1e-14)
    # The dense form is the same matrix in Linear.weight.reshape(-1) layout.
    small = p.factor[:5, :5]
    torch.testing.assert_close(ld.dense_hessian(small, 3) @ directions[0, :3, :5].reshape(-1), (directions[0, :3, :5] @ small).reshape(-1))


def test_influence_is_the_derivative_of_retraining_in_an_example_weight(problem):
    # tau(q, i) is exactly d m(q) / d w_i at w = 1 of the retrained optimum,
    # the first-order m(with i) - m(without i); a central difference pins its
    # sign and 1/N. (Dropping example i itself is not first order: with 16
    # draws per example its leverage is up to about 0.1, and the exact
    # leave-one-out effect differs from tau by 5-20 %.)
    p = problem
    tau = ld.influence_scores(p.query_grads, p.train_grads, p.factor, RIDGE)
    step = 1e-3
    # The examples with the largest total effect, so the check is not vacuous.
    for i in torch.topk(tau.abs().sum(dim=0), 4).indices.tolist():
        measured = []
        for sign in (1.0, -1.0):
            weights = torch.ones(N_TRAIN, dtype=torch.float64)
            weights[i] += sign * step
            measured.append(ld.measure(ld.fit(p.stats, weights, RIDGE), p.zq, p.epsq))
        derivative = (measured[0] - measured[1]) / (2 * step)
        # Observed relative error 4e-8 (the O(step^2) term).
        torch.testing.assert_close(tau[:, i], derivative, rtol=1e-6, atol=1e-6 * derivative.abs().max().item())


def test_exact_influence_reaches_lds_near_one(problem):
    p = problem
    mask = sample_subsets(N_TRAIN, N_SUBSETS, FRACTION, SEED)
    retrained = torch.stack([ld.fit(p.stats, torch.from_numpy(row).double(), RIDGE) for row in mask])
    truth = ld.measure(retrained, p.zq, p.epsq).numpy()  # [M, Q]
    tau = ld.influence_scores(p.query_grads, p.train_grads, p.factor, RIDGE).numpy()
    lds = lds_per_query(tau, mask, truth)
    assert not np.isnan(lds).any()
    # Observed: mean 0.960, min 0.931 (0.959 / 0.910 and 0.958 / 0.910 with
    # subset seeds 1 and 2).
    assert lds.mean() > 0.9, f"LDS {lds.mean():.3f} (per query {np.round(lds, 3)})"
    assert lds.min() > 0.8, f"LDS per query {np.round(lds, 3)}"


def curvature_matvec(basis, name, v):
    """F vec(V) of the basis for one module, V [d_out, d_in] -> [d_out, d_in]."""
    q_out, q_in = basis.q_out[name], basis.q_in[name]
    return q_out @ (basis.eigenvalues[name] * (q_out.T @ v @ q_in)) @ q_in.T


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_kronecker_curvature_equals_exact_hessian(problem, bases, kind):
    p, basis = problem, bases(kind)

    # Undamped curvature: no factor of 2, D, N or S may differ from the Hessian.
    directions = torch.randn(3, *p.weight.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for v in directions:
        # Observed relative error 4e-15.
        torch.testing.assert_close(curvature_matvec(basis, MODULE, v), v @ p.factor, rtol=1e-10, atol=1e-14)
    assert basis.mean_eigenvalue() == pytest.approx(torch.trace(p.factor).item() / p.factor.shape[0], rel=1e-10)

    # Damping is absolute on that scale: (F + lambda I)^{-1} = (H + lambda I)^{-1}.
    flat = p.query_grads.reshape(N_QUERIES, -1)
    solved = [basis.solve(flat, damping) for damping in DAMPINGS]
    for index, damping in enumerate(DAMPINGS):
        expected = ld.precondition(p.query_grads, p.factor, damping).reshape(N_QUERIES, -1)
        # Observed relative error 3e-12 (K's condition number is 6.5e4).
        torch.testing.assert_close(solved[index], expected, rtol=1e-9, atol=1e-10 * expected.abs().max().item())


def test_package_influence_scores_equal_exact_scores(problem, bases):
    p = problem
    model = ld.LinearDenoiser(p.abar, p.shape, p.weight)

    # The package's gradients are those of the closed form's draws.
    package_train = torch.cat([g for _, g in training_gradient_batches(model, p.scheduler, p.images, "loss", TRAIN_DRAWS, SEED)])
    torch.testing.assert_close(package_train, p.train_grads.reshape(N_TRAIN, -1), rtol=1e-10, atol=1e-14)
    package_query = query_gradients(model, p.scheduler, p.queries, "loss", QUERY_DRAWS, SEED)
    torch.testing.assert_close(package_query, p.query_grads.reshape(N_QUERIES, -1), rtol=1e-10, atol=1e-14)

    scores = influence_scores(
        model,
        p.scheduler,
        p.images,
        p.queries,
        bases("ekfac"),
        DAMPINGS,
        measurement="loss",
        train_draws=TRAIN_DRAWS,
        query_draws=QUERY_DRAWS,
        seed=SEED,
    )
    assert scores.shape == (len(DAMPINGS), N_QUERIES, N_TRAIN)
    for index, damping in enumerate(DAMPINGS):
        expected = ld.influence_scores(p.query_grads, p.train_grads, p.factor, damping).numpy()
        # influence_scores returns float32.
        np.testing.assert_allclose(scores[index], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
