"""The simplified diffusion loss and related per-draw quantities.

For a clean image x0, timestep t and noise eps, the noised input is
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps and the model predicts eps.
"""

from __future__ import annotations

import torch


def noised(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x_t for x0 [B,C,H,W], noise [B,C,H,W], timesteps [B] -> [B,C,H,W]."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)
    abar = alphas_cumprod[timesteps].view(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def per_draw_output(unet, scheduler, x0, noise, timesteps, output_fn: str = "loss") -> torch.Tensor:
    """One scalar per draw: [B].

    - ``loss``: mean over pixels of (eps - eps_theta(x_t, t))^2, the simplified
      diffusion loss (lower is better).
    - ``squared_norm``: mean over pixels of eps_theta(x_t, t)^2, the output
      function of D-TRAK.
    """
    prediction = unet(noised(scheduler, x0, noise, timesteps), timesteps).sample
    if output_fn == "loss":
        return (prediction - noise).pow(2).flatten(start_dim=1).mean(dim=1)
    if output_fn == "squared_norm":
        return prediction.pow(2).flatten(start_dim=1).mean(dim=1)
    raise ValueError(f"output function {output_fn!r} is not one of: loss, squared_norm")
