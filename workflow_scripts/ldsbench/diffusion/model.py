"""The diffusion model: a diffusers UNet2DModel with a DDPM noise schedule."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ldsbench.diffusion.precision import network_forward

UNET_KEYS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "norm_num_groups",
    "norm_eps",
    "attention_head_dim",
    "dropout",
    "resnet_time_scale_shift",
    "add_attention",
)


def build_unet(model_config: dict) -> UNet2DModel:
    """UNet2DModel from the ``model.unet`` config section (keys as in diffusers)."""
    kwargs = {key: model_config[key] for key in UNET_KEYS if key in model_config}
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return UNet2DModel(**kwargs)


def build_scheduler(scheduler_config: dict) -> DDPMScheduler:
    """DDPM noise schedule: epsilon prediction, linear betas, fixed_small variance."""
    return DDPMScheduler(
        num_train_timesteps=scheduler_config.get("num_train_timesteps", 1000),
        beta_schedule="linear",
        beta_start=scheduler_config.get("beta_start", 1e-4),
        beta_end=scheduler_config.get("beta_end", 0.02),
        variance_type="fixed_small",
        prediction_type="epsilon",
        clip_sample=scheduler_config.get("clip_sample", True),
    )


def attributed_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The modules whose weights are attributed: every Linear and Conv2d, in
    ``named_modules`` order. Biases, normalisation and embeddings are excluded."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]


def selected_module_names(model: torch.nn.Module, pattern: str | None, prefix: str = "") -> list[str]:
    """Names (with ``prefix``) of the attributed modules whose name matches
    ``pattern`` (``re.search``), in order; all of them for None."""
    import re

    names = [name for name, _ in attributed_modules(model)]
    if pattern is None:
        return [prefix + name for name in names]
    selected = [prefix + name for name in names if re.search(pattern, name)]
    if not selected:
        raise ValueError(f"modules {pattern!r} matches no attributed module; names are: {', '.join(names)}")
    return selected


def module_mask(model: torch.nn.Module, pattern: str | None) -> torch.Tensor:
    """[P] bool over the flat attributed weights: True for the modules
    ``selected_module_names`` picks."""
    selected = set(selected_module_names(model, pattern))
    return torch.cat([torch.full((m.weight.numel(),), name in selected) for name, m in attributed_modules(model)])


def attributed_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [module.weight for _, module in attributed_modules(model)]


def flat_gradient(model: torch.nn.Module) -> torch.Tensor:
    """Concatenated ``weight.grad.reshape(-1)`` of the attributed modules: [P]."""
    return torch.cat([p.grad.reshape(-1) for p in attributed_parameters(model)])


class FlatNoisePredictor(torch.nn.Module):
    """Wraps the UNet for curvlinops: X = {"sample": [B,C,H,W], "timestep": [B]}
    -> predicted noise flattened to [B, C*H*W] (curvlinops needs 2-D outputs)."""

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.unet = unet

    def forward(self, inputs: dict) -> torch.Tensor:
        return network_forward(self.unet, inputs["sample"], inputs["timestep"]).flatten(start_dim=1)
