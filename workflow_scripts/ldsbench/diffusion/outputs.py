"""The simplified diffusion loss and related per-draw quantities.

For a clean image x0, timestep t and noise eps, the noised input is
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps and the model predicts eps.

A *per-draw output function* maps one draw (x0, eps, t) to one scalar; a
measurement or a gradient is the Monte Carlo mean of it over draws with t
uniform on {0..T-1} and eps ~ N(0, I). The functions here are either named by
a string (``loss``, ``squared_norm``: the training-side output functions of
the attribution methods) or callables ``f(unet, scheduler, x0, noise,
timesteps) -> [B]`` that carry their own settings (``LossAtTimestep``,
``SimplifiedElbo`` and ``elbo.ElboDraw``). A callable may importance-sample
timesteps: it then names its proposal with ``timestep_probabilities`` and
expects t drawn from it (``noise.design_draws`` does that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ldsbench.diffusion.precision import network_forward
from ldsbench.spec.output_functions import OUTPUT_FUNCTIONS


def noised(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x_t for x0 [B,C,H,W], noise [B,C,H,W], timesteps [B] -> [B,C,H,W]."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)
    abar = alphas_cumprod[timesteps].view(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def ddpm_coefficients(scheduler) -> dict[str, torch.Tensor]:
    """The DDPM chain's coefficients as float64 [T] tensors, all derived from
    ``scheduler.alphas_cumprod`` exactly as ``DDPMScheduler.step`` derives them
    (beta_t = 1 - abar_t / abar_{t-1}, abar_{-1} = 1), so that they describe
    the chain the models sample from.

    Keys: ``abar``, ``abar_prev``, ``alpha``, ``beta``, ``posterior_variance``
    (beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t, 0 at t = 0),
    ``coef_x0`` and ``coef_xt`` (the posterior mean of x_{t-1} is
    coef_x0 x0 + coef_xt x_t).
    """
    abar = scheduler.alphas_cumprod.double()
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    alpha = abar / abar_prev
    beta = 1 - alpha
    return {
        "abar": abar,
        "abar_prev": abar_prev,
        "alpha": alpha,
        "beta": beta,
        "posterior_variance": (1 - abar_prev) / (1 - abar) * beta,
        "coef_x0": abar_prev.sqrt() * beta / (1 - abar),
        "coef_xt": alpha.sqrt() * (1 - abar_prev) / (1 - abar),
    }


def simplified_loss(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """Mean over pixels of (eps - eps_theta(x_t, t))^2: [B]."""
    prediction = network_forward(unet, noised(scheduler, x0, noise, timesteps), timesteps)
    return (prediction - noise).pow(2).flatten(start_dim=1).mean(dim=1)


def training_loss(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """The training objective: ``simplified_loss`` averaged over the batch,
    computed as one mean over every element (a scalar, in float32)."""
    prediction = network_forward(unet, noised(scheduler, x0, noise, timesteps), timesteps)
    return torch.nn.functional.mse_loss(prediction.float(), noise)


def squared_norm(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """Mean over pixels of eps_theta(x_t, t)^2, D-TRAK's output function: [B]."""
    prediction = network_forward(unet, noised(scheduler, x0, noise, timesteps), timesteps)
    return prediction.pow(2).flatten(start_dim=1).mean(dim=1)


def _prediction(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    return network_forward(unet, noised(scheduler, x0, noise, timesteps), timesteps).flatten(start_dim=1)


# D-TRAK's ablations of its output function (Zheng et al. 2024, table 1):
# each maps the predicted noise [B, D] to one scalar per draw [B].
def mean_output(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """Mean over pixels of eps_theta(x_t, t): [B]."""
    return _prediction(unet, scheduler, x0, noise, timesteps).mean(dim=1)


def l1_norm(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """Mean over pixels of |eps_theta(x_t, t)|: [B]."""
    return _prediction(unet, scheduler, x0, noise, timesteps).abs().mean(dim=1)


def l2_norm(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """Euclidean norm of eps_theta(x_t, t) over pixels: [B]."""
    return _prediction(unet, scheduler, x0, noise, timesteps).norm(dim=1)


def linf_norm(unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
    """Largest |eps_theta(x_t, t)| over pixels: [B]."""
    return _prediction(unet, scheduler, x0, noise, timesteps).abs().amax(dim=1)


@dataclass(frozen=True)
class LossAtTimestep:
    """The simplified loss at one fixed timestep: the drawn timesteps are
    ignored and ``timestep`` is used for every draw."""

    timestep: int

    def key(self) -> tuple:
        return ("loss_at_t", self.timestep)

    def __call__(self, unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
        fixed = torch.full_like(timesteps, self.timestep)
        return simplified_loss(unet, scheduler, x0, noise, fixed)


def simplified_elbo_weights(scheduler) -> torch.Tensor:
    """w_t = beta_t / (2 alpha_t (1 - abar_t)) for t = 0..T-1: [T] float64.

    This is the weight of ||eps - eps_theta||^2 in the KL term of Ho et al.
    (2020, eq. 12) when the reverse variance is sigma_t^2 = beta_t; with the
    sampler's beta-tilde variance the exact weight would have abar_{t-1} in
    place of abar_t (see ``elbo.py`` for the exact bound).
    """
    c = ddpm_coefficients(scheduler)
    return c["beta"] / (2 * c["alpha"] * (1 - c["abar"]))


@dataclass(frozen=True)
class SimplifiedElbo:
    """One draw of sum_{t=0}^{T-1} w_t E_eps sum over pixels of (eps - eps_theta(x_t, t))^2, in nats: [B].

    Timesteps are importance-sampled from p_t = w_t / W (W = sum_t w_t,
    ``timestep_probabilities``), so each draw is W sum over pixels of
    (eps - eps_theta(x_t, t))^2: w_t spans two orders of magnitude (large at
    small t), and uniform timesteps weighted by T w_t would leave most of the
    variance in the rare small-t draws. Draws must come from that proposal.
    """

    def key(self) -> tuple:
        return ("simplified_elbo",)

    def timestep_probabilities(self, scheduler) -> torch.Tensor:
        weights = simplified_elbo_weights(scheduler)
        return weights / weights.sum()

    def __call__(self, unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
        prediction = network_forward(unet, noised(scheduler, x0, noise, timesteps), timesteps)
        total_weight = simplified_elbo_weights(scheduler).sum().item()
        return total_weight * (prediction - noise).pow(2).flatten(start_dim=1).sum(dim=1)


#: The named output functions (``spec.output_functions``, which describes
#: them), one table: a plain function is keyed in random streams by its name,
#: an object by its ``key()``.
NAMED_OUTPUTS = {
    "loss": simplified_loss,
    "squared_norm": squared_norm,
    "mean": mean_output,
    "l1_norm": l1_norm,
    "l2_norm": l2_norm,
    "linf_norm": linf_norm,
    "elbo_weighted": SimplifiedElbo(),
}
assert NAMED_OUTPUTS.keys() == OUTPUT_FUNCTIONS.keys()


def named_output(name: str):
    """Output function ``name`` as ``per_draw_output`` takes it: the name of
    a plain function, or the object that carries its own key and proposal."""
    function = NAMED_OUTPUTS[name]
    return function if hasattr(function, "key") else name


def timestep_probabilities(output_fn, scheduler):
    """The distribution [T] float64 an output function expects its timesteps
    from, or None for uniform on {0..T-1}."""
    method = getattr(output_fn, "timestep_probabilities", None)
    return None if method is None else method(scheduler)


def output_key(output_fn) -> tuple:
    """Keys that name an output function in random-stream seeds."""
    return (output_fn,) if isinstance(output_fn, str) else output_fn.key()


def per_draw_output(unet, scheduler, x0, noise, timesteps, output_fn="loss") -> torch.Tensor:
    """One scalar per draw: x0 [B,C,H,W], noise [B,C,H,W], timesteps [B] -> [B].

    - ``loss``: mean over pixels of (eps - eps_theta(x_t, t))^2, the simplified
      diffusion loss (lower is better).
    - ``squared_norm``: mean over pixels of eps_theta(x_t, t)^2, the output
      function of D-TRAK.
    - a callable output function (see the module docstring).
    """
    if isinstance(output_fn, str):
        if output_fn not in NAMED_OUTPUTS:
            raise ValueError(f"output function {output_fn!r} is not one of: {', '.join(NAMED_OUTPUTS)}")
        output_fn = NAMED_OUTPUTS[output_fn]
    return output_fn(unet, scheduler, x0, noise, timesteps)


class MeanOutput:
    """Mean over pixels of eps_theta(x_t, t), one scalar per draw: [B].

    DAS's ``output: mean``, the scalar output of its authors' published
    scripts (the projection of the output on the constant direction): the
    function of ``mean_output``, as an object whose key names DAS's draws."""

    def key(self) -> tuple:
        return ("das_mean_output",)

    def __call__(self, unet, scheduler, x0, noise, timesteps) -> torch.Tensor:
        return mean_output(unet, scheduler, x0, noise, timesteps)
