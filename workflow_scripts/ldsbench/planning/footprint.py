"""Sizes of a model that decide memory, measured without allocating it.

The UNet is built on PyTorch's ``meta`` device (shapes, no storage), and one
forward and backward pass of a single draw runs under a dispatch mode that
adds up the bytes of every tensor storage while it is alive. Its peak is the
activation memory of one draw; with grad it includes what autograd saves
for the backward pass. On the preset's UNet this is an upper bound: 3.3 GB
estimated against 2.5 GB measured (CPU resident size less the process and
weights) for a batch of 32 draws.
"""

from __future__ import annotations

import functools
import json
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ldsbench.diffusion.model import UNET_KEYS, attributed_modules, build_unet
from ldsbench.runtime.io import atomic_path, config_hash

_FORMAT = "ldsbench.footprint.v1"


@dataclass(frozen=True)
class ModelFootprint:
    """model_params: every parameter; attributed_weights: P, the Linear and
    Conv2d weights; largest_module: the largest of those weights; modules:
    their count; kronecker_factor_values: sum of d_in^2 + d_out^2 over them
    (K-FAC's two factors); training_bytes_per_draw / forward_bytes_per_draw:
    activation bytes that one more draw in a batch adds (float32), with and
    without grad."""

    model_params: int
    attributed_weights: int
    largest_module: int
    modules: int
    kronecker_factor_values: int
    training_bytes_per_draw: int
    forward_bytes_per_draw: int


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the mode while they
    are alive (a storage shared by views counts once)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [tensors alive, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                entry = self._storages.get(key)
                if entry is None:
                    self._storages[key] = [1, storage.nbytes()]
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                else:
                    entry[0] += 1
                weakref.finalize(tensor, self._release, key)
        return out

    def _release(self, key: int) -> None:
        entry = self._storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._storages[key]


def _batch_peak(unet, unet_config: dict, batch: int, with_grad: bool) -> int:
    size, channels = unet_config["sample_size"], unet_config["in_channels"]
    x = torch.zeros(batch, channels, size, size, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    mode = _LiveBytes()
    with torch.set_grad_enabled(with_grad), mode:
        out = unet(x, t).sample
        if with_grad:
            out.square().mean().backward()
        del out
    return mode.peak


def _bytes_per_draw(unet, unet_config: dict, with_grad: bool) -> int:
    """Marginal peak bytes of one more draw in a batch (from batches of 4 and
    8: a batch of one takes other kernels, and the weight gradients are a
    fixed cost that ``memory.gradient_pass_bytes`` counts)."""
    small, large = (_batch_peak(unet, unet_config, b, with_grad) for b in (4, 8))
    return max(1, (large - small) // 4)


def model_footprint(unet_config: dict) -> ModelFootprint:
    """The footprint of the ``model.unet`` config's UNet (about a second)."""
    with torch.device("meta"):
        unet = build_unet(unet_config)
    modules = attributed_modules(unet)
    shapes = [(m.weight.shape[0], m.weight[0].numel()) for _, m in modules]
    return ModelFootprint(
        model_params=sum(p.numel() for p in unet.parameters()),
        attributed_weights=sum(d_out * d_in for d_out, d_in in shapes),
        largest_module=max(d_out * d_in for d_out, d_in in shapes),
        modules=len(shapes),
        kronecker_factor_values=sum(d_out**2 + d_in**2 for d_out, d_in in shapes),
        training_bytes_per_draw=_bytes_per_draw(unet, unet_config, with_grad=True),
        forward_bytes_per_draw=_bytes_per_draw(unet, unet_config, with_grad=False),
    )


@functools.lru_cache(maxsize=8)
def _footprint_of_config(config_json: str) -> ModelFootprint:
    return model_footprint(json.loads(config_json))


def footprint_of(unet) -> ModelFootprint:
    """``model_footprint`` of a built UNet's architecture (cached per process)."""
    return _footprint_of_config(json.dumps({key: unet.config[key] for key in UNET_KEYS if key in unet.config}, sort_keys=True, default=list))


def cached_model_footprint(unet_config: dict, cache_dir) -> ModelFootprint:
    """``model_footprint``, kept in ``cache_dir/footprint-{hash}.json`` so that
    every Snakemake invocation (each cluster job parses the workflow) does
    not rebuild it."""
    path = Path(cache_dir) / f"footprint-{config_hash(unet_config)}.json"
    if path.exists():
        payload = json.loads(path.read_text())
        if payload.get("format") == _FORMAT:
            return ModelFootprint(**payload["footprint"])
    footprint = model_footprint(unet_config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"format": _FORMAT, "footprint": asdict(footprint)}, indent=1))
    return footprint


@dataclass(frozen=True)
class VaeFootprint:
    """params: the VAE's parameters; encode_bytes_per_image /
    decode_bytes_per_image: activation bytes that one more image in a batch
    adds (float32, no grad), measured as the UNet's are."""

    params: int
    encode_bytes_per_image: int
    decode_bytes_per_image: int


def vae_footprint(vae_config: dict, latent_side: int) -> VaeFootprint:
    """The footprint of the ``AutoencoderKL`` that ``vae_config`` (its
    ``config.json``) describes, built on the meta device, on images whose
    latents are ``latent_side`` x ``latent_side``."""
    import torch
    from diffusers import AutoencoderKL

    config = {key: value for key, value in vae_config.items() if not key.startswith("_")}
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    side = latent_side * 2 ** (len(vae.config.block_out_channels) - 1)

    def peak(batch: int, decode: bool) -> int:
        mode = _LiveBytes()
        with torch.no_grad(), mode:
            if decode:
                out = vae.decode(torch.zeros(batch, vae.config.latent_channels, latent_side, latent_side, device="meta")).sample
            else:
                out = vae.encode(torch.zeros(batch, vae.config.in_channels, side, side, device="meta")).latent_dist.mean
            del out
        return mode.peak

    return VaeFootprint(
        params=sum(p.numel() for p in vae.parameters()),
        encode_bytes_per_image=max(1, (peak(4, False) - peak(2, False)) // 2),
        decode_bytes_per_image=max(1, (peak(4, True) - peak(2, True)) // 2),
    )
