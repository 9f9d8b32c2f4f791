"""runtime.precision: fp32 changes nothing, bf16 runs the network in
bfloat16 (autocast) and stays close, and the products that score stay in
their own precision under any setting."""

import pytest
import torch

from ldsbench.diffusion import per_draw_output
from ldsbench.precision import network_precision
from ldsbench.projection import RandomProjector
from tiny_models import tiny_model_and_images


def _losses(unet, scheduler, images, precision):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([10, 500, 900, 999])[: len(images)]
    with torch.no_grad(), network_precision(precision, "cpu"):
        return per_draw_output(unet, scheduler, images, noise, timesteps, "loss")


def test_fp32_is_exactly_the_default_and_bf16_is_close():
    unet, scheduler, train, _ = tiny_model_and_images(4)
    plain = _losses(unet, scheduler, train, "fp32")
    with torch.no_grad():
        noise = torch.randn(train.shape, generator=torch.Generator().manual_seed(0))
        reference = per_draw_output(unet, scheduler, train, noise, torch.tensor([10, 500, 900, 999]), "loss")
    assert torch.equal(plain, reference)
    bf16 = _losses(unet, scheduler, train, "bf16")
    assert not torch.equal(bf16, plain)
    torch.testing.assert_close(bf16.float(), plain, rtol=0.05, atol=0.01)


def test_bf16_runs_convolutions_in_bfloat16():
    conv = torch.nn.Conv2d(2, 2, 3)
    with network_precision("bf16", "cpu"):
        assert conv(torch.randn(1, 2, 5, 5)).dtype == torch.bfloat16


def test_projection_stays_float32_under_bf16():
    grads = torch.randn(3, 5000)
    projector = RandomProjector(5000, 16, seed=0)
    with network_precision("bf16", "cpu"):
        inside = projector.project(grads)
    torch.testing.assert_close(inside, projector.project(grads), rtol=0, atol=0)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        network_precision("fp16", "cpu")


def test_sampling_and_measurement_run_under_bf16():
    """Every network output is brought back to float32 (``full_precision``),
    so writes into float32 buffers (the sampler's) work under autocast."""
    from ldsbench.precision import full_precision
    from ldsbench.sampling import ddpm_sample

    unet, scheduler, train, _ = tiny_model_and_images(2)
    with network_precision("bf16", "cpu"):
        samples = ddpm_sample(unet, scheduler, 3, 4, seed=0, batch_size=2)
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
    assert full_precision(torch.ones(1, dtype=torch.float64)).dtype == torch.float64
