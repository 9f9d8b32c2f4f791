"""A tiny real diffusers UNet with random images, shared by the unit tests."""

import torch

from ldsbench.diffusion.model import build_scheduler, build_unet

#: A tiny diffusers UNet on 8 x 8 grey images.
UNET = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=[8, 16],
    layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    norm_num_groups=4,
    attention_head_dim=8,
    add_attention=False,
)


def tiny_model_and_images(n_train: int = 4, n_queries: int = 2, unet_config: dict = UNET):
    """(unet in eval mode, scheduler, train [n_train, 1, 8, 8], queries
    [n_queries, 1, 8, 8]), images uniform in [-1, 1]; the same every call."""
    torch.manual_seed(0)
    unet, scheduler = build_unet(unet_config).eval(), build_scheduler({})
    generator = torch.Generator().manual_seed(1)
    train = torch.rand(n_train, 1, 8, 8, generator=generator) * 2 - 1
    queries = torch.rand(n_queries, 1, 8, 8, generator=generator) * 2 - 1
    return unet, scheduler, train, queries
