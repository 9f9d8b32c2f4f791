"""Latent diffusion: a local ``AutoencoderKL`` maps images to the latents
the UNet is trained on, and latents back to images where images are shown.

Encoding. An image x in [-1, 1] [C, H, W] has the VAE's posterior
N(mu(x), diag(sigma(x)^2)) over latents [c, H / f, W / f], f the
downsampling factor 2^(len(block_out_channels) - 1). The stored latent is

    z = scaling_factor * (e - shift_factor),

with e = mu(x) (``latents: mean``, deterministic) or e = mu(x) + sigma(x) *
eps (``latents: sample``), eps ~ N(0, I) from a generator keyed by
(``seed``, split, row), so a row's draw does not depend on the batch size.
``scaling_factor`` and ``shift_factor`` (0 when the VAE has none) come from
the VAE's ``config.json``, as diffusers' latent pipelines use them.

Decoding. x = clip(decoder(z / scaling_factor + shift_factor), -1, 1).

Nothing downstream of the latent files knows they are latents: subsets,
training, measurements, curvature and scores see arrays [N, c, h, w]. The
config checks (``vae_errors``) read only ``config.json`` and the weight
file's name, so they run before any job.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SPLIT_STREAMS = {"train": 0, "heldout": 1}


class VaeError(ValueError):
    """A VAE folder that is missing or malformed; the message names it."""


def vae_config(path) -> dict:
    """The ``config.json`` of an ``AutoencoderKL`` saved with ``save_pretrained``."""
    folder = Path(path)
    if not folder.is_dir():
        raise VaeError(f"model.vae.path: {str(folder)!r} is not a folder (expected an AutoencoderKL saved with save_pretrained)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise VaeError(f"model.vae.path: no config.json in {str(folder)!r} (expected an AutoencoderKL saved with save_pretrained)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise VaeError(f"model.vae.path: {str(config_path)!r} is not JSON ({error})") from error
    if config.get("_class_name") != "AutoencoderKL":
        raise VaeError(f"model.vae.path: {str(config_path)!r} describes a {config.get('_class_name')!r}, not an AutoencoderKL")
    weights_file(folder)
    return config


def weights_file(path) -> Path:
    """The VAE's weight file (safetensors preferred)."""
    for name in WEIGHT_FILES:
        if (Path(path) / name).is_file():
            return Path(path) / name
    raise VaeError(f"model.vae.path: no weights in {str(path)!r} (expected {' or '.join(WEIGHT_FILES)}, as save_pretrained writes)")


def downsampling_factor(config: dict) -> int:
    """Image side / latent side: one factor of 2 per encoder block after the first."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def image_shape_errors(vae: dict, unet: dict, channels: int, size: int | None, where: str) -> list[str]:
    """Images of ``channels`` x ``size`` x ``size`` must fit the VAE and give the UNet's latent size."""
    try:
        config = vae_config(vae["path"])
    except VaeError:
        return []  # reported by vae_errors
    errors = []
    if config.get("in_channels", 3) != channels:
        errors.append(f"model.vae: the VAE takes {config.get('in_channels', 3)}-channel images, {where} are {channels}-channel")
    factor = downsampling_factor(config)
    if size is not None and size != unet["sample_size"] * factor:
        errors.append(
            f"model.unet.sample_size: {unet['sample_size']} latents x the VAE's downsampling {factor} = {unet['sample_size'] * factor}, "
            f"but {where} are {size}x{size} (set sample_size to {size / factor:g})"
        )
    return errors


def weights_sha256(path) -> str:
    """sha256 of the VAE's weight file: the latents' provenance."""
    from ldsbench.runtime.io import file_sha256

    return file_sha256(weights_file(path))


def load_vae(path, device="cpu"):
    """The ``AutoencoderKL`` in ``path``, in eval mode on ``device``."""
    from diffusers import AutoencoderKL

    vae_config(path)
    return AutoencoderKL.from_pretrained(path).to(device).eval()


def scale_and_shift(vae) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of a loaded VAE; shift 0 when it has none."""
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def row_noise(seed: int, split: str, row: int, shape) -> np.ndarray:
    """eps for the latent draw of ``row`` of ``split``: float32 ``shape``."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], row])
    return rng.standard_normal(shape, dtype=np.float32)


def encode_images(vae, images: np.ndarray, latents: str, seed: int, split: str, batch_size: int) -> np.ndarray:
    """Images [N, C, H, W], float32 in [-1, 1] or uint8 levels -> latents
    float32 [N, c, H / f, W / f] (module docstring)."""
    import torch

    from ldsbench.data.image_sets import to_unit_range

    if latents not in ("mean", "sample"):
        raise ValueError(f"model.vae.latents: {latents!r} is not mean or sample")

    device = next(vae.parameters()).device
    scale, shift = scale_and_shift(vae)
    out = []
    with torch.no_grad():
        for first in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(to_unit_range(images[first : first + batch_size]))).to(device)
            posterior = vae.encode(batch).latent_dist
            value = posterior.mean
            if latents == "sample":
                eps = np.stack([row_noise(seed, split, first + i, value.shape[1:]) for i in range(len(batch))])
                value = value + posterior.std * torch.from_numpy(eps).to(device)
            out.append(((value - shift) * scale).float().cpu().numpy())
    if not out:
        side = images.shape[-1] // downsampling_factor(vae.config)
        return np.zeros((0, vae.config.latent_channels, side, side), dtype=np.float32)
    return np.concatenate(out)


def decode_latents(vae, latents: np.ndarray, batch_size: int) -> np.ndarray:
    """Latents float32 [N, c, h, w] -> images float32 [N, C, h f, w f] in [-1, 1]."""
    import torch

    device = next(vae.parameters()).device
    scale, shift = scale_and_shift(vae)
    out = []
    with torch.no_grad():
        for first in range(0, len(latents), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(latents[first : first + batch_size])).to(device)
            out.append(vae.decode(batch / scale + shift).sample.clamp(-1, 1).float().cpu().numpy())
    return np.concatenate(out)
