"""The DDPM variational bound (Ho et al. 2020, eq. 5) of the models we sample.

With diffusers' 0-based timesteps k = 0..T-1 (Ho et al.'s t = k + 1), the
noised image at index k is x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps, and

    -log P(x0) <= L_prior + sum_{k=1}^{T-1} L_k + L_dec,

- L_prior = KL(q(x_{T-1} | x0) || N(0, I)), closed form, no parameters;
- L_k = KL(q(x_{k-1} | x_k, x0) || p_theta(x_{k-1} | x_k)), both Gaussian
  with the same variance beta-tilde_k (the scheduler's ``fixed_small``), so
  L_k = coef_x0_k^2 ||x0 - x0_hat||^2 / (2 beta-tilde_k);
- L_dec = -log p_theta(x0 | x_0-index sample), a discretised Gaussian.

p_theta is the chain ``DDPMScheduler.step`` samples from: its mean is the
posterior mean with x0 replaced by the model's prediction
x0_hat = (x_k - sqrt(1 - abar_k) eps_theta) / sqrt(abar_k), clipped to
[-clip_sample_range, clip_sample_range] when ``clip_sample`` is set (as the
sampler does). The sampler's last step returns the decoder mean without
noise; a likelihood needs a nonzero decoder scale, and like Ho et al.'s
code we use their clipped log variance, log beta-tilde at index 1.

Data are quantised to ``levels`` grey levels spaced 2 / (levels - 1) apart
on [-1, 1] (17 for the digits, 256 for CIFAR); the decoder gives each level
the probability of its bin, and the two extreme bins extend to -inf / +inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ldsbench.diffusion.outputs import ddpm_coefficients, noised
from ldsbench.diffusion.precision import network_forward


def check_scheduler(scheduler) -> None:
    """The bound is derived for epsilon prediction, fixed_small variance and
    no dynamic thresholding; refuse anything else rather than mis-measure."""
    config = scheduler.config
    problems = []
    if config.prediction_type != "epsilon":
        problems.append(f"prediction_type {config.prediction_type!r} (need 'epsilon')")
    if config.variance_type != "fixed_small":
        problems.append(f"variance_type {config.variance_type!r} (need 'fixed_small')")
    if getattr(config, "thresholding", False):
        problems.append("thresholding is on")
    if config.num_train_timesteps < 2:
        problems.append("num_train_timesteps < 2")
    if problems:
        raise ValueError("the DDPM bound does not apply to this scheduler: " + ", ".join(problems))


def quantise(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Round values in [-1, 1] to the nearest of ``levels`` equally spaced levels (same shape)."""
    scale = (levels - 1) / 2
    return (torch.round((x.clamp(-1, 1) + 1) * scale) / scale - 1).to(x.dtype)


def predicted_x0(scheduler, x_t: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x0_hat as ``DDPMScheduler.step`` computes it, clipping included.

    x_t, eps [B, C, H, W] (any float dtype), timesteps [B] -> float64 [B, C, H, W].
    """
    abar = ddpm_coefficients(scheduler)["abar"].to(x_t.device)[timesteps].view(-1, *([1] * (x_t.dim() - 1)))
    x0 = (x_t.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt()
    if scheduler.config.clip_sample:
        limit = scheduler.config.clip_sample_range
        x0 = x0.clamp(-limit, limit)
    return x0


def model_mean(scheduler, x_t: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Mean of p_theta(x_{k-1} | x_k): float64 [B, C, H, W] (at k = 0: the decoder mean x0_hat)."""
    c = {key: value.to(x_t.device)[timesteps].view(-1, *([1] * (x_t.dim() - 1))) for key, value in ddpm_coefficients(scheduler).items()}
    return c["coef_x0"] * predicted_x0(scheduler, x_t, eps, timesteps) + c["coef_xt"] * x_t.double()


def decoder_log_scale(scheduler) -> float:
    """log of the decoder's standard deviation: 0.5 log beta-tilde_1 (Ho et al.'s clipped variance)."""
    return 0.5 * math.log(float(ddpm_coefficients(scheduler)["posterior_variance"][1]))


def prior_kl(scheduler, x0: torch.Tensor) -> torch.Tensor:
    """KL(N(sqrt(abar_{T-1}) x0, (1 - abar_{T-1}) I) || N(0, I)) in nats, summed over pixels: [B] float64."""
    abar = ddpm_coefficients(scheduler)["abar"][-1].item()
    x0 = x0.double()
    per_pixel = 0.5 * (abar * x0.pow(2) - abar - math.log1p(-abar))
    return per_pixel.flatten(start_dim=1).sum(dim=1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends; each branch only sees
    inputs where it is finite, so gradients stay finite."""
    cut = -math.log(2.0)
    near = torch.where(x > cut, x, torch.full_like(x, cut))
    far = torch.where(x > cut, torch.full_like(x, cut), x)
    return torch.where(x > cut, torch.log(-torch.expm1(near)), torch.log1p(-torch.exp(far)))


def log_normal_interval(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) elementwise for finite lower < upper.

    Intervals in the upper tail are mirrored into the lower tail, where
    log Phi is accurate, so tiny probabilities are not rounded to 0.
    """
    mirror = lower > 0
    low = torch.where(mirror, -upper, lower)
    high = torch.where(mirror, -lower, upper)
    log_high = torch.special.log_ndtr(high)
    return log_high + _log1mexp(torch.special.log_ndtr(low) - log_high)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale, levels: int) -> torch.Tensor:
    """log P(bin of x) under N(mean, exp(log_scale)^2), per pixel (Ho et al.'s
    ``discretized_gaussian_log_likelihood`` for any number of levels).

    x (on the grid), mean: [B, C, H, W]; log_scale: scalar or broadcastable.
    Bins have half-width 1 / (levels - 1); the lowest bin is (-inf, -1 + half],
    the highest [1 - half, +inf). Returns float64 [B, C, H, W].
    """
    x, mean = x.double(), mean.double()
    half = 1.0 / (levels - 1)
    inv_scale = torch.exp(-torch.as_tensor(log_scale, dtype=torch.float64, device=x.device))
    upper = (x - mean + half) * inv_scale
    lower = (x - mean - half) * inv_scale
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    log_middle = log_normal_interval(lower, upper)
    return torch.where(x < -1 + half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, log_middle))


def kl_terms(scheduler, x0: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """L_k for k >= 1 in nats, summed over pixels: [B] float64.

    x0 (the data), x_t, eps (the model's prediction at x_t): [B, C, H, W];
    timesteps [B] with every entry >= 1.
    """
    c = ddpm_coefficients(scheduler)
    coef = c["coef_x0"].to(x0.device)[timesteps]
    variance = c["posterior_variance"].to(x0.device)[timesteps]
    gap = (x0.double() - predicted_x0(scheduler, x_t, eps, timesteps)).pow(2).flatten(start_dim=1).sum(dim=1)
    return coef.pow(2) * gap / (2 * variance)


def decoder_nll(scheduler, x0: torch.Tensor, x_first: torch.Tensor, eps: torch.Tensor, levels: int) -> torch.Tensor:
    """L_dec = -log p_theta(x0 | x at index 0) in nats, summed over pixels: [B] float64.

    x0 on the grid of ``levels``; x_first the sample at index 0 and eps the
    model's prediction there: [B, C, H, W].
    """
    zeros = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
    mean = model_mean(scheduler, x_first, eps, zeros)
    log_p = discretized_gaussian_log_likelihood(x0, mean, decoder_log_scale(scheduler), levels)
    return -log_p.flatten(start_dim=1).sum(dim=1)


def kl_proposal(scheduler) -> torch.Tensor:
    """Importance-sampling distribution of k for the KL terms: [T] float64.

    p_k is proportional to beta_k / (2 alpha_k (1 - abar_{k-1})), the weight
    of ||eps - eps_theta||^2 in L_k when x0_hat is not clipped; p_0 = 0
    (index 0 is the decoder, evaluated on every draw).
    """
    c = ddpm_coefficients(scheduler)
    weights = c["beta"] / (2 * c["alpha"] * (1 - c["abar_prev"]).clamp(min=1e-300))
    weights[0] = 0.0
    return weights / weights.sum()


@dataclass(frozen=True)
class ElboDraw:
    """One draw of the ELBO estimator in bits per dimension (higher is better).

    For the query x0 rounded to ``levels`` levels, noise eps and a timestep
    k >= 1 drawn from ``kl_proposal`` (p_k):

        -(L_prior + L_dec(eps) + L_k(eps) / p_k) / (D ln 2),

    whose expectation is the bound -(L_prior + E L_dec + sum_{k>=1} L_k) / (D ln 2).
    The decoder term, the largest single term, is evaluated on every draw,
    and the KL terms are importance-sampled because they fall by orders of
    magnitude from small to large k (uniform k would leave nearly all the
    variance in rare small-k draws). Each draw costs two forward passes.
    Draws with k = 0 (which the proposal never gives) get no KL term.
    """

    levels: int

    def key(self) -> tuple:
        return ("elbo", self.levels)

    def timestep_probabilities(self, scheduler) -> torch.Tensor:
        return kl_proposal(scheduler)

    def __call__(self, unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
        check_scheduler(scheduler)
        x0 = quantise(x0, self.levels)
        zeros = torch.zeros_like(timesteps)
        kl_steps = timesteps.clamp(min=1)
        inputs = torch.cat([noised(scheduler, x0, noise, zeros), noised(scheduler, x0, noise, kl_steps)])
        eps = network_forward(unet, inputs, torch.cat([zeros, kl_steps]))
        half = len(x0)
        decoder = decoder_nll(scheduler, x0, inputs[:half], eps[:half], self.levels)
        kl = kl_terms(scheduler, x0, inputs[half:], eps[half:], kl_steps)
        weight = (timesteps >= 1).double() / kl_proposal(scheduler).to(x0.device)[kl_steps]
        total = prior_kl(scheduler, x0) + decoder + weight * kl
        return -total / (x0[0].numel() * math.log(2.0))
