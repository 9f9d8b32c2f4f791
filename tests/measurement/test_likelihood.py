"""The probability-flow ODE log-likelihood against Gaussian data, whose exact
noise predictor and log-density are known in closed form."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.measurement.estimators import NonFiniteMeasurementError, estimate
from ldsbench.measurement.likelihood import VPSchedule, dequantised_log_likelihood, ode_log_likelihood
from tiny_models import UNET

SCHEDULE = VPSchedule(beta_min=0.1, beta_max=20.0, num_timesteps=1000)
T_MIN = 1e-5


# Tiny models: one thread is faster than several (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _abar(t):
    return math.exp(SCHEDULE.log_alpha_bar(t))


class GaussianData:
    """Data N(mu, cov) in D dimensions: the exact eps-predictor of the VP
    process, eps*(x_t) = sqrt(1 - abar) (abar cov + (1 - abar) I)^{-1} (x_t - sqrt(abar) mu),
    and the exact marginal log-density at any t."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray):
        self.mu, self.cov = torch.from_numpy(mu), torch.from_numpy(cov)

    def marginal(self, t):
        abar = _abar(t)
        return math.sqrt(abar) * self.mu, abar * self.cov + (1 - abar) * torch.eye(len(self.mu), dtype=torch.float64)

    def eps(self, x, t):
        """x [B, 1, 1, D] -> eps* [B, 1, 1, D]."""
        mean, cov = self.marginal(t)
        flat = x.reshape(len(x), -1) - mean
        return (math.sqrt(1 - _abar(t)) * torch.linalg.solve(cov, flat.T).T).reshape(x.shape)

    def log_density(self, x, t):
        mean, cov = self.marginal(t)
        return torch.distributions.MultivariateNormal(mean, cov).log_prob(torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1))


def test_schedule_matches_the_discrete_chain():
    scheduler = build_scheduler({})
    schedule = VPSchedule.from_scheduler(scheduler)
    assert schedule.beta(0.0) == pytest.approx(1000 * 1e-4) and schedule.beta(1.0) == pytest.approx(1000 * 0.02)
    # Index k is the state after k + 1 steps: time (k + 1) / T.
    assert schedule.label(1.0) == pytest.approx(999) and schedule.label(0.5) == pytest.approx(499) and schedule.label(1e-5) == 0
    abar = scheduler.alphas_cumprod.double().numpy()
    for t in [1e-3, 3e-3, 0.01, 0.1, 0.5, 0.9, 1.0]:
        continuous = schedule.log_alpha_bar(t)
        log_snr = continuous - math.log(-math.expm1(continuous))
        discrete_abar = math.exp(np.interp(schedule.label(t), np.arange(1000), np.log(abar)))
        assert abs(log_snr - math.log(discrete_abar / (1 - discrete_abar))) < 0.1, t


def test_log_density_of_isotropic_gaussian_data_is_exact():
    mu, s = 0.3, 0.5
    data = GaussianData(np.full(4, mu), s**2 * np.eye(4))
    # The closed form of the task: eps* = sqrt(1-abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar).
    x = torch.randn(3, 1, 1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    abar = _abar(0.4)
    closed_form = math.sqrt(1 - abar) * (x - math.sqrt(abar) * mu) / (abar * s**2 + 1 - abar)
    torch.testing.assert_close(data.eps(x, 0.4), closed_form)

    exact_prior = lambda z: data.log_density(z, 1.0).numpy()  # noqa: E731
    log_p, _ = ode_log_likelihood(data.eps, x, SCHEDULE, None, rtol=1e-8, atol=1e-8, t_min=T_MIN, model_dtype=torch.float64, prior_log_density=exact_prior)
    np.testing.assert_allclose(log_p, data.log_density(x, T_MIN).numpy(), atol=1e-5)
    # With the N(0, I) prior the only error is the prior's mismatch at t = 1 (abar(1) = 4.5e-5).
    log_p_standard, _ = ode_log_likelihood(data.eps, x, SCHEDULE, None, rtol=1e-8, atol=1e-8, t_min=T_MIN, model_dtype=torch.float64)
    np.testing.assert_allclose(log_p_standard, data.log_density(x, T_MIN).numpy(), atol=5e-2)


@pytest.fixture(scope="module")
def correlated():
    generator = np.random.default_rng(1)
    factor = generator.normal(size=(4, 4))
    return GaussianData(generator.normal(size=4) * 0.3, 0.2 * factor @ factor.T / 4 + 0.05 * np.eye(4))


def test_log_density_of_correlated_gaussian_data_is_exact(correlated):
    x = torch.randn(2, 1, 1, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.4
    exact_prior = lambda z: correlated.log_density(z, 1.0).numpy()  # noqa: E731
    for tolerance, error in [(1e-4, 1e-2), (1e-8, 1e-5)]:
        log_p, _ = ode_log_likelihood(
            correlated.eps, x, SCHEDULE, None, rtol=tolerance, atol=tolerance, t_min=T_MIN, model_dtype=torch.float64, prior_log_density=exact_prior
        )
        np.testing.assert_allclose(log_p, correlated.log_density(x, T_MIN).numpy(), atol=error)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased(correlated, distribution):
    from ldsbench.diffusion.noise import likelihood_draws

    n = 256
    x = torch.tensor([[[[0.2, -0.1, 0.4, 0.0]]]], dtype=torch.float64).expand(n, -1, -1, -1)
    probes = torch.cat([likelihood_draws(5, 0, d, 1, (1, 1, 4), 1, distribution)[1] for d in range(n)])
    exact_prior = lambda z: correlated.log_density(z, 1.0).numpy()  # noqa: E731
    log_p, _ = ode_log_likelihood(
        correlated.eps, x, SCHEDULE, probes, rtol=1e-6, atol=1e-6, t_min=T_MIN, model_dtype=torch.float64, prior_log_density=exact_prior
    )
    exact = correlated.log_density(x[:1], T_MIN).item()
    error = log_p.std(ddof=1) / math.sqrt(n)
    assert error > 1e-3, "the probes must make a difference (off-diagonal Jacobian)"
    assert abs(log_p.mean() - exact) < 4 * error


class ExactNoisePredictor(torch.nn.Module):
    """A stand-in UNet for isotropic Gaussian data: reads the continuous time
    back from the label (t = (label + 1) / T, valid for t >= 1 / T)."""

    def __init__(self, mu: float, s: float, num_timesteps: int = 1000):
        super().__init__()
        self.mu, self.s, self.num_timesteps = mu, s, num_timesteps
        self.dtype_anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, labels):
        t = (labels.double() + 1) / self.num_timesteps
        abar = torch.exp(-(SCHEDULE.beta_min * t + 0.5 * (SCHEDULE.beta_max - SCHEDULE.beta_min) * t**2)).view(-1, *([1] * (x.dim() - 1)))
        return SimpleNamespace(sample=(1 - abar).sqrt() * (x - abar.sqrt() * self.mu) / (abar * self.s**2 + 1 - abar))


def test_dequantised_bits_per_dimension_have_the_right_scale():
    """E_u[log p(x0 + Delta (u - 1/2))] + D log Delta, in bits per dimension,
    against its closed form for Gaussian data, and below log2 P(bin) / D."""
    mu, s, levels, n = 0.1, 0.5, 17, 64
    scheduler = build_scheduler({})
    t_min = 1 / 1000  # where the stand-in's label mapping is exact
    model = ExactNoisePredictor(mu, s)
    x0 = torch.tensor([[[[-0.25, 0.5, 1.0]]]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    uniforms = torch.rand(n, 1, 1, 3, generator=generator, dtype=torch.float64)
    probes = torch.randint(0, 2, (n, 1, 1, 1, 3), generator=generator).double() * 2 - 1
    bits, _ = dequantised_log_likelihood(model, scheduler, x0.expand(n, -1, -1, -1), uniforms, probes, levels, rtol=1e-7, atol=1e-7, t_min=t_min)
    # The documented default start is this same t = 1 / T, where the label is 0.
    assert VPSchedule.from_scheduler(scheduler).smallest_trained_time == t_min
    assert VPSchedule.from_scheduler(scheduler).label(t_min) == 0.0 < VPSchedule.from_scheduler(scheduler).label(2 * t_min)
    default, _ = dequantised_log_likelihood(model, scheduler, x0.expand(n, -1, -1, -1), uniforms, probes, levels, rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(default, bits)

    abar = _abar(t_min)
    mean, variance, width = math.sqrt(abar) * mu, abar * s**2 + 1 - abar, 2 / (levels - 1)
    flat = x0.flatten().numpy()
    expected_log_p = (-0.5 * ((flat - mean) ** 2 + width**2 / 12) / variance - 0.5 * math.log(2 * math.pi * variance)).sum()
    expected_bits = (expected_log_p + 3 * math.log(width)) / (3 * math.log(2))
    assert abs(bits.mean() - expected_bits) < 4 * bits.std(ddof=1) / math.sqrt(n)
    bins = norm.cdf((flat + width / 2 - mean) / math.sqrt(variance)) - norm.cdf((flat - width / 2 - mean) / math.sqrt(variance))
    assert bits.mean() <= np.log2(bins).sum() / 3


def test_measurement_is_per_query_and_reproducible():
    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET).eval(), build_scheduler({})
    queries = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    settings = {"type": "log_likelihood", "draws": 2, "rtol": 1e-3, "atol": 1e-3, "levels": 17}
    both = estimate(unet, scheduler, queries, settings)
    first = estimate(unet, scheduler, queries[:1], settings)
    # With one query per solve, a query's value depends on nothing else.
    np.testing.assert_array_equal(both.mean[:1], first.mean)
    assert (both.stderr > 0).all() and np.isfinite(both.mean).all() and (both.draws == 2).all()
    # An untrained model is a poor density model: below log2(1/17) bits/dim, the uniform distribution over 17 levels.
    assert (both.mean < -math.log2(17)).all()


class NaNAboveHalf(torch.nn.Module):
    """Predicts NaN for rows whose mean pixel is above 0.5."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, labels):
        out = self.model(x, labels).sample
        bad = (x.flatten(start_dim=1).mean(dim=1) > 0.5).view(-1, *([1] * (x.dim() - 1)))
        return SimpleNamespace(sample=torch.where(bad, torch.full_like(out, float("nan")), out))


def test_non_finite_log_likelihood_names_the_queries():
    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET).eval(), build_scheduler({})
    queries = torch.tensor([-0.5, 0.9, -0.2, 1.0]).view(4, 1, 1, 1).expand(4, 1, 8, 8).clone()
    settings = {"type": "log_likelihood", "draws": 2, "rtol": 1e-2, "atol": 1e-2, "levels": 17, "queries_per_solve": 4}
    with pytest.raises(NonFiniteMeasurementError, match=r"'log_likelihood' is not finite for queries \[1, 3\]"):
        estimate(NaNAboveHalf(unet), scheduler, queries, settings)
