"""The config check of latent diffusion (``model.vae``), torch-free: the VAE's
folder and settings against the UNet, the scheduler and the measurements."""

from __future__ import annotations

from ldsbench.data.latents import VaeError, vae_config
from ldsbench.spec.measurement_types import measurement_type


def vae_errors(vae: dict, unet: dict, scheduler: dict, measurements: dict, training: dict) -> list[str]:
    """Config errors of latent mode that do not depend on the data: the VAE
    folder, the UNet's channels, clipping and measurements that need grey levels."""
    try:
        config = vae_config(vae["path"])
    except VaeError as error:
        return [str(error)]
    errors = []
    latent = config.get("latent_channels", 4)
    if unet["in_channels"] != latent or unet["out_channels"] != latent:
        errors.append(
            f"model.unet.in_channels and out_channels must be the VAE's latent_channels ({latent}), not {unet['in_channels']} and {unet['out_channels']}"
        )
    if scheduler["clip_sample"]:
        errors.append("model.scheduler.clip_sample: must be false with model.vae (latents are not confined to [-1, 1])")
    for name, entry in measurements.items():
        if measurement_type(entry["type"]).needs_levels:
            errors.append(
                f"measurements.{name}: type {entry['type']} needs the data's grey levels (a discretised decoder), "
                "which latents do not have; use loss, loss_at_t, simplified_elbo or squared_norm with model.vae"
            )
    if training.get("dequantise"):
        errors.append("training.dequantise: dequantises grey levels, which latents do not have; remove it with model.vae")
    return errors
