"""Log-likelihood through the probability-flow ODE of the VP SDE (Song et al. 2021).

Continuous-time correspondence. The DDPM chain with T steps and linear betas
beta_0..beta_{T-1} is the Euler discretisation of the VP SDE with
beta(t) = beta_min + t (beta_max - beta_min) on t in [0, 1], beta_min =
T beta_0, beta_max = T beta_{T-1}; then abar(t) = exp(-int_0^t beta) and
sigma(t) = sqrt(1 - abar(t)). Diffusers' timestep k (0-based) is the state
after k + 1 steps, i.e. continuous time t = (k + 1) / T, so the UNet is
evaluated at the float label k(t) = T t - 1, clamped at 0 below t = 1 / T
(no model was trained at less noise than index 0). This matches the discrete
noise levels to within 0.1 in log signal-to-noise ratio for t >= 1e-3;
Song et al.'s label t (T - 1) is off by about one index, which at small t is
up to 0.7 in log-SNR.

The ODE dx/dt = -beta(t) / 2 (x - eps_theta(x, t) / sigma(t)) maps the data
at t_min to the prior N(0, I) at t = 1, and

    log p_{t_min}(x) = log N(x(1); 0, I) + int_{t_min}^{1} div f(x(t), t) dt,
    div f = -beta(t) D / 2 + beta(t) / (2 sigma(t)) div eps_theta,

with div eps_theta exact (D vector-Jacobian products) or Hutchinson's
estimate v^T (d eps_theta / dx) v averaged over probe vectors v that stay
fixed along the path. The augmented ODE is solved with scipy's adaptive
RK45 in float64.

For data quantised to L levels (bin width Delta = 2 / (L - 1) on [-1, 1]),
uniform dequantisation x = x0 + Delta (u - 1/2), u ~ U[0, 1)^D, gives
log P(x0) >= E_u[log p(x)] + D log Delta; divided by D ln 2 this is the
log-likelihood in bits per dimension (the negative of the usual "bpd").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ldsbench.diffusion.precision import network_forward


class NonFiniteODEError(RuntimeError):
    """The noise predictor returned NaN or infinite values during the solve."""


class ODESolveError(RuntimeError):
    """The adaptive solver did not reach t = 1."""


@dataclass(frozen=True)
class VPSchedule:
    """Continuous-time VP noise schedule matching a DDPM chain (see module docstring)."""

    beta_min: float
    beta_max: float
    num_timesteps: int

    @classmethod
    def from_scheduler(cls, scheduler) -> VPSchedule:
        config = scheduler.config
        if config.beta_schedule != "linear":
            raise ValueError(f"the VP correspondence is implemented for linear betas, not {config.beta_schedule!r}")
        steps = config.num_train_timesteps
        return cls(steps * config.beta_start, steps * config.beta_end, steps)

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha_bar(self, t: float) -> float:
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

    def sigma(self, t: float) -> float:
        return math.sqrt(-math.expm1(self.log_alpha_bar(t)))

    @property
    def smallest_trained_time(self) -> float:
        """t = 1 / T, where the UNet's label is 0: the smallest noise level the
        model was trained at. Below it the label is clamped, so the network is
        asked about noise levels it never saw."""
        return 1.0 / self.num_timesteps

    def label(self, t: float) -> float:
        """The (float) diffusers timestep at which the UNet is evaluated at time t."""
        return max(self.num_timesteps * t - 1.0, 0.0)


def unet_noise_predictor(unet, schedule: VPSchedule):
    """eps_fn(x [B, C, H, W], t float) -> eps_theta [B, C, H, W] for a diffusers UNet."""

    def eps_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        labels = torch.full((len(x),), schedule.label(t), dtype=x.dtype, device=x.device)
        return network_forward(unet, x, labels)

    return eps_fn


def ode_log_likelihood(
    eps_fn,
    x: torch.Tensor,
    schedule: VPSchedule,
    probes: torch.Tensor | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float = 1e-5,
    model_dtype: torch.dtype = torch.float32,
    prior_log_density=None,
) -> tuple[np.ndarray, int]:
    """log p_{t_min}(x) in nats for each row of x [B, *shape], solved jointly.

    probes: [B, K, *shape] Hutchinson probe vectors (fixed along the path),
    or None for the exact divergence (D backward passes per evaluation).
    ``prior_log_density(z [B, D] float64 numpy) -> [B]`` replaces the
    standard normal prior at t = 1 (used to test against known densities).
    eps_fn is evaluated in ``model_dtype`` on x's device. Returns
    (log densities [B] float64, number of ODE right-hand-side evaluations).
    """
    batch, shape = x.shape[0], tuple(x.shape[1:])
    dim = int(np.prod(shape))
    device = x.device
    probe_tensor = None if probes is None else probes.to(device, model_dtype)
    evaluations = 0

    def rhs(t, state):
        nonlocal evaluations
        evaluations += 1
        points = torch.from_numpy(state[: batch * dim].reshape(batch, *shape)).to(device, model_dtype)
        with torch.enable_grad():
            points.requires_grad_(True)
            eps = eps_fn(points, t)
            if not torch.isfinite(eps).all():
                bad = (~torch.isfinite(eps)).flatten(start_dim=1).any(dim=1).nonzero().flatten().tolist()
                raise NonFiniteODEError(f"noise prediction not finite at t={t:.3g} for rows {bad}")
            if probe_tensor is None:
                divergence = _exact_divergence(eps, points)
            else:
                divergence = _hutchinson_divergence(eps, points, probe_tensor)
        beta, sigma = schedule.beta(t), schedule.sigma(t)
        x64 = torch.from_numpy(state[: batch * dim])
        drift = -0.5 * beta * (x64 - eps.detach().double().cpu().reshape(-1) / sigma)
        div_f = -0.5 * beta * dim + 0.5 * beta / sigma * divergence.double().cpu()
        return np.concatenate([drift.numpy(), div_f.numpy()])

    # Imported here: scipy.integrate costs every measurement job half a second.
    from scipy.integrate import solve_ivp

    initial = np.concatenate([x.detach().double().cpu().reshape(-1).numpy(), np.zeros(batch)])
    solution = solve_ivp(rhs, (t_min, 1.0), initial, method="RK45", rtol=rtol, atol=atol)
    if not solution.success:
        raise ODESolveError(f"probability-flow ODE solve failed: {solution.message}")
    final = solution.y[:, -1]
    z = final[: batch * dim].reshape(batch, dim)
    if prior_log_density is None:
        prior = -0.5 * (z**2).sum(axis=1) - 0.5 * dim * math.log(2 * math.pi)
    else:
        prior = np.asarray(prior_log_density(z), dtype=np.float64)
    return prior + final[batch * dim :], evaluations


def _exact_divergence(eps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """sum_i d eps_i / d x_i per row: [B]. One backward pass per pixel."""
    flat = eps.flatten(start_dim=1)
    total = torch.zeros(len(eps), dtype=eps.dtype, device=eps.device)
    for index in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, index].sum(), points, retain_graph=True)
        total = total + grad.flatten(start_dim=1)[:, index]
    return total


def _hutchinson_divergence(eps: torch.Tensor, points: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """Mean over the K probes v of v^T (d eps / d x) v per row: [B]."""
    estimates = []
    for k in range(probes.shape[1]):
        vector = probes[:, k]
        (vjp,) = torch.autograd.grad(eps, points, grad_outputs=vector, retain_graph=k + 1 < probes.shape[1])
        estimates.append((vjp * vector).flatten(start_dim=1).sum(dim=1))
    return torch.stack(estimates).mean(dim=0)


def dequantised_log_likelihood(
    unet,
    scheduler,
    x0: torch.Tensor,
    uniforms: torch.Tensor,
    probes: torch.Tensor,
    levels: int,
    *,
    rtol: float,
    atol: float,
    t_min: float | None = None,
) -> tuple[np.ndarray, int]:
    """Log-likelihood lower bound in bits per dimension for each row (higher is better).

    The ODE starts at ``t_min`` (None: ``VPSchedule.smallest_trained_time``).

    x0: [B, C, H, W] on the grid of ``levels`` levels; uniforms [B, C, H, W]
    in [0, 1) (dequantisation); probes [B, K, C, H, W]. Returns
    ((log p(x0 + Delta (u - 1/2)) + D log Delta) / (D ln 2) [B], evaluations).
    """
    schedule = VPSchedule.from_scheduler(scheduler)
    t_min = schedule.smallest_trained_time if t_min is None else t_min
    width = 2.0 / (levels - 1)
    points = x0.double() + width * (uniforms.to(x0.device).double() - 0.5)
    model_dtype = next(unet.parameters()).dtype
    log_density, evaluations = ode_log_likelihood(
        unet_noise_predictor(unet, schedule), points, schedule, probes, rtol=rtol, atol=atol, t_min=t_min, model_dtype=model_dtype
    )
    dim = x0[0].numel()
    return (log_density + dim * math.log(width)) / (dim * math.log(2.0)), evaluations
