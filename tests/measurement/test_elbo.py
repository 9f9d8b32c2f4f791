"""The DDPM variational bound: each term against an independent computation,
and the whole estimator against brute-force trajectories of q."""

import math
from types import SimpleNamespace

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import norm

from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.diffusion.noise import Design, content_key, design_draws
from ldsbench.measurement.elbo import ElboDraw, decoder_log_scale, discretized_gaussian_log_likelihood, kl_proposal, model_mean, prior_kl, quantise
from ldsbench.measurement.estimators import estimate, measurement_output_fn
from ldsbench.runtime.seeds import stream_seed
from tiny_models import UNET, tiny_model_and_images

LEVELS = 5


# Tiny models: one thread is faster than several (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


class AffineNoisePredictor(torch.nn.Module):
    """eps_theta(x, k) = a_k * x + b_k per pixel: a tiny model with enough
    freedom that x0_hat leaves [-1, 1] (so clipping matters)."""

    def __init__(self, num_timesteps: int, shape: tuple, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(0.6 + 0.3 * torch.randn(num_timesteps, *shape, generator=generator, dtype=torch.float64))
        self.b = torch.nn.Parameter(0.4 * torch.randn(num_timesteps, *shape, generator=generator, dtype=torch.float64))

    def forward(self, x, timesteps):
        return SimpleNamespace(sample=self.a[timesteps] * x.double() + self.b[timesteps])


def _small_scheduler(steps=6):
    return build_scheduler({"num_train_timesteps": steps, "beta_start": 0.05, "beta_end": 0.4, "clip_sample": True})


def _gaussian_log_density(x, mean, variance):
    return -0.5 * ((x - mean) ** 2 / variance + np.log(2 * np.pi * variance))


def _brute_force_elbo(model, scheduler, x0: np.ndarray, n: int, seed: int):
    """E_q[log p_theta(x_{0:T}) - log q(x_{1:T} | x0)] in nats from n whole
    trajectories sampled step by step from q, with every density written
    out: no KL decomposition, no closed forms. Returns (mean, standard error)."""
    abar = scheduler.alphas_cumprod.double().numpy()
    steps = len(abar)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    alpha = abar / abar_prev
    beta = 1 - alpha
    beta_tilde = (1 - abar_prev) / (1 - abar) * beta
    rng = np.random.default_rng(seed)
    states = [np.broadcast_to(x0, (n, *x0.shape))]
    log_q = 0.0
    for k in range(steps):
        mean = np.sqrt(alpha[k]) * states[-1]
        state = mean + np.sqrt(beta[k]) * rng.standard_normal(states[-1].shape)
        log_q = log_q + _gaussian_log_density(state, mean, beta[k]).reshape(n, -1).sum(axis=1)
        states.append(state)
    # states[k + 1] is the sample at diffusers index k.
    log_p = _gaussian_log_density(states[-1], 0.0, 1.0).reshape(n, -1).sum(axis=1)
    for k in range(steps - 1, -1, -1):
        x_k = states[k + 1]
        with torch.no_grad():
            eps = model(torch.from_numpy(x_k), torch.full((n,), k)).sample.numpy()
        x0_hat = np.clip((x_k - np.sqrt(1 - abar[k]) * eps) / np.sqrt(abar[k]), -1, 1)
        if k >= 1:
            mean = np.sqrt(abar_prev[k]) * beta[k] / (1 - abar[k]) * x0_hat + np.sqrt(alpha[k]) * (1 - abar_prev[k]) / (1 - abar[k]) * x_k
            log_p = log_p + _gaussian_log_density(states[k], mean, beta_tilde[k]).reshape(n, -1).sum(axis=1)
        else:
            scale, half = np.sqrt(beta_tilde[1]), 1.0 / (LEVELS - 1)
            upper = np.where(x0 > 1 - half, np.inf, x0 + half)
            lower = np.where(x0 < -1 + half, -np.inf, x0 - half)
            probability = norm.cdf((upper - x0_hat) / scale) - norm.cdf((lower - x0_hat) / scale)
            log_p = log_p + np.log(probability).reshape(n, -1).sum(axis=1)
    values = log_p - log_q
    return values.mean(), values.std(ddof=1) / math.sqrt(n)


@pytest.mark.parametrize("query", [[-1.0, 0.5], [0.0, 1.0]])
def test_elbo_matches_brute_force_trajectories(query):
    scheduler = _small_scheduler()
    shape = (1, 1, 2)
    model = AffineNoisePredictor(6, shape)
    x0 = np.asarray(query, dtype=np.float64).reshape(shape)
    brute, brute_error = _brute_force_elbo(model, scheduler, x0, n=200_000, seed=0)
    queries = torch.from_numpy(x0).float().unsqueeze(0)
    result = estimate(model, scheduler, queries, {"type": "elbo", "draws": 65536, "strata": 16, "levels": LEVELS}, batch_size=8192)
    # The measurement is in bits per dimension; the brute force in nats per image.
    ours, our_error = result.mean[0] * 2 * math.log(2), result.stderr[0] * 2 * math.log(2)
    assert abs(ours - brute) < 4 * math.hypot(brute_error, our_error), (ours, brute, our_error, brute_error)
    assert our_error < 0.01 * abs(brute)


def test_clipping_is_exercised_by_the_brute_force_model():
    scheduler = _small_scheduler()
    model = AffineNoisePredictor(6, (1, 1, 2))
    x = torch.randn(1000, 1, 1, 2, dtype=torch.float64)
    abar = scheduler.alphas_cumprod.double()
    with torch.no_grad():
        x0_hat = (x - (1 - abar[5]).sqrt() * model(x, torch.full((1000,), 5)).sample) / abar[5].sqrt()
    assert 0.05 < (x0_hat.abs() > 1).double().mean() < 0.95


@pytest.mark.parametrize("steps, clip", [(6, True), (1000, True), (1000, False)])
def test_model_mean_is_the_samplers_mean(steps, clip):
    """p_theta's mean equals DDPMScheduler.step's prev_sample minus its noise."""
    config = {"num_train_timesteps": steps, "beta_start": 0.05 if steps == 6 else 1e-4, "beta_end": 0.4 if steps == 6 else 0.02, "clip_sample": clip}
    scheduler = build_scheduler(config)
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 1, 3, 3, generator=generator)
    eps = 2 * torch.randn(4, 1, 3, 3, generator=generator)
    for t in sorted({0, 1, steps // 2, steps - 1}):
        prev = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7)) if t > 0 else torch.zeros_like(x_t)
        expected = prev.double() - scheduler._get_variance(t).double().sqrt() * noise.double()
        ours = model_mean(scheduler, x_t, eps, torch.full((4,), t))
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_decoder_scale_is_ho_et_al_clipped_variance():
    scheduler = build_scheduler({})
    abar = scheduler.alphas_cumprod.double()
    beta_tilde_1 = (1 - abar[0]) / (1 - abar[1]) * (1 - abar[1] / abar[0])
    assert decoder_log_scale(scheduler) == pytest.approx(0.5 * math.log(beta_tilde_1.item()), rel=1e-12)


def test_prior_kl_matches_the_closed_form():
    scheduler = _small_scheduler()
    x0 = torch.tensor([[[[-1.0, 0.25, 1.0]]]], dtype=torch.float64)
    abar = scheduler.alphas_cumprod.double()[-1]
    q = torch.distributions.Normal(abar.sqrt() * x0, (1 - abar).sqrt())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum()
    assert prior_kl(scheduler, x0).item() == pytest.approx(expected.item(), rel=1e-10)
    # Monte Carlo check of the same KL from samples of q.
    samples = q.sample((200_000,))
    log_ratio = (q.log_prob(samples) - torch.distributions.Normal(0.0, 1.0).log_prob(samples)).sum(dim=(1, 2, 3, 4))
    assert abs(log_ratio.mean().item() - expected.item()) < 4 * log_ratio.std().item() / math.sqrt(200_000)


def test_discretized_likelihood_is_a_distribution_over_levels():
    levels = 17
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64)
    for mean, log_scale in [(0.3, math.log(0.05)), (-0.97, math.log(0.2)), (1.4, math.log(0.01))]:
        log_p = discretized_gaussian_log_likelihood(grid.view(-1, 1), torch.full((levels, 1), mean, dtype=torch.float64), log_scale, levels)
        assert torch.exp(log_p).sum().item() == pytest.approx(1.0, abs=1e-12)
        half, scale = 1 / (levels - 1), math.exp(log_scale)
        upper = np.where(grid.numpy() > 1 - half, np.inf, grid.numpy() + half)
        lower = np.where(grid.numpy() < -1 + half, -np.inf, grid.numpy() - half)
        reference = norm.cdf((upper - mean) / scale) - norm.cdf((lower - mean) / scale)
        np.testing.assert_allclose(torch.exp(log_p).flatten().numpy(), reference, atol=1e-12)


def test_discretized_likelihood_is_accurate_in_the_tails():
    # Ho et al.'s version floors probabilities at 1e-12; ours stays accurate.
    mpmath.mp.dps = 1200  # enough digits to subtract CDFs of 1 - 1e-545
    levels, scale = 256, 0.01
    for x, mean in [(0.0, 0.5), (0.5, 0.0), (-0.2, -0.15)]:
        half = 1 / (levels - 1)
        expected = float(mpmath.log(mpmath.ncdf((x + half - mean) / scale) - mpmath.ncdf((x - half - mean) / scale)))
        ours = discretized_gaussian_log_likelihood(
            torch.tensor([x], dtype=torch.float64), torch.tensor([mean], dtype=torch.float64), math.log(scale), levels
        ).item()
        assert ours == pytest.approx(expected, rel=1e-9)


def test_quantise_rounds_to_the_grid():
    x = torch.tensor([-1.2, -0.97, -0.9, 0.0, 0.06, 0.07, 1.0])
    np.testing.assert_allclose(quantise(x, 17).numpy(), [-1.0, -1.0, -0.875, 0.0, 0.0, 0.125, 1.0])


def test_kl_proposal_skips_the_decoder_and_sums_to_one():
    probabilities = kl_proposal(build_scheduler({}))
    assert probabilities[0] == 0 and (probabilities[1:] > 0).all() and probabilities.sum().item() == pytest.approx(1.0)


def test_query_gradient_is_the_gradient_of_the_estimator():
    """scoring.query_gradients for the ELBO differentiates the measurement's
    own estimator on draws from its proposal."""
    from ldsbench.attribution.scoring import query_gradients
    from ldsbench.diffusion.model import attributed_parameters

    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET).eval(), build_scheduler({})
    queries = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    output_fn = measurement_output_fn({"type": "elbo", "levels": 17})
    assert output_fn == ElboDraw(17)
    assert measurement_output_fn({"type": "log_likelihood", "levels": 17}) == ElboDraw(17), "log-likelihood uses the ELBO surrogate"
    grads = query_gradients(unet, scheduler, queries, output_fn, n_draws=6, seed=3)
    stream = stream_seed(3, "query_gradient", "elbo", 17)
    params = attributed_parameters(unet)
    for item in range(2):
        t, eps = design_draws(stream, content_key(queries[item]), 0, 6, (1, 8, 8), 1000, Design(), kl_proposal(scheduler))
        value = output_fn(unet, scheduler, queries[item].expand(6, -1, -1, -1), eps, t).mean()
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])
        torch.testing.assert_close(grads[item], expected.float(), rtol=1e-4, atol=1e-7)


def test_influence_scores_run_for_the_elbo():
    import copy

    from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
    from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
    from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules
    from ldsbench.methods.influence import influence_scores
    from ldsbench.methods.trak import trak_scores

    unet, scheduler, train, queries = tiny_model_and_images()
    model = FlatNoisePredictor(copy.deepcopy(unet)).double()
    data = NoisedTrainingData(train, scheduler, draws_per_example=2, seed=0)
    names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
    basis = fit_kronecker_eigenbasis(model, names, data, CurvatureSettings(kind="kfac"), num_data=data.num_data, batch_size_fn=batch_size_of)
    elbo = {"type": "elbo", "levels": 17}
    scores = influence_scores(unet, scheduler, train, queries, basis, [1e-3], measurement=elbo, train_draws=2, query_draws=4, seed=0)
    assert scores.shape == (1, 2, 4) and np.isfinite(scores).all() and np.abs(scores).max() > 0
    trak = trak_scores(
        unet, scheduler, train, queries, [0.1], measurement=elbo, output_fn="loss", projection_dim=None, projection_seed=0, train_draws=2, query_draws=4, seed=0
    )
    assert trak.shape == (1, 2, 4) and np.isfinite(trak).all()
