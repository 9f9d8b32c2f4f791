"""A tiny real diffusers UNet with random images, shared by the unit tests."""

import torch

from ldsbench.model import build_scheduler, build_unet
from test_measurement import UNET


def tiny_model_and_images(n_train: int = 4, n_queries: int = 2, unet_config: dict = UNET):
    """(unet in eval mode, scheduler, train [n_train, 1, 8, 8], queries
    [n_queries, 1, 8, 8]), images uniform in [-1, 1]; the same every call."""
    torch.manual_seed(0)
    unet, scheduler = build_unet(unet_config).eval(), build_scheduler({})
    generator = torch.Generator().manual_seed(1)
    train = torch.rand(n_train, 1, 8, 8, generator=generator) * 2 - 1
    queries = torch.rand(n_queries, 1, 8, 8, generator=generator) * 2 - 1
    return unet, scheduler, train, queries
