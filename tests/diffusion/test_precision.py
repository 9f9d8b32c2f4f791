"""runtime.precision: fp32 changes nothing, bf16 autocasts the network's
forward passes alone, stays close and trains, and the products that score
stay in their own precision."""

import pytest
import torch

from ldsbench.attribution.projection import RandomProjector
from ldsbench.diffusion.outputs import per_draw_output
from ldsbench.diffusion.precision import network_precision
from tiny_models import tiny_model_and_images


def _losses(unet, scheduler, images, precision):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([10, 500, 900, 999])[: len(images)]
    with torch.no_grad(), network_precision(precision):
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


def test_only_the_forward_pass_is_autocast():
    conv = torch.nn.Conv2d(2, 2, 3)
    with network_precision("bf16"):
        assert conv(torch.randn(1, 2, 5, 5)).dtype == torch.float32, "outside network_forward nothing changes"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(torch.randn(1, 2, 5, 5)).dtype == torch.bfloat16


def test_bf16_training_learns_like_fp32(tmp_path):
    """With backward and optimizer steps under autocast the tiny UNet stopped
    learning (loss 1.0 after 60 steps); with the forward pass alone it
    learns as in fp32."""
    from ldsbench.data.image_sets import load_digits_split
    from ldsbench.diffusion.model import build_scheduler
    from ldsbench.diffusion.training import TrainingSettings, train_diffusion_model
    from tiny_models import UNET

    images = torch.from_numpy(load_digits_split(48, 0, 0)[0].images)
    settings = TrainingSettings(steps=60, batch_size=32, learning_rate=1e-3, checkpoint_every=100, seed=0)
    final = {}
    for precision in ("fp32", "bf16"):
        losses = []
        with network_precision(precision):
            train_diffusion_model(images, UNET, build_scheduler({}), settings, tmp_path / precision, lambda step, loss: losses.append(loss))
        final[precision] = sum(losses[-10:]) / 10
    assert final["fp32"] < 0.8
    assert abs(final["bf16"] - final["fp32"]) < 0.2 * final["fp32"]


def test_projection_stays_float32_under_bf16():
    grads = torch.randn(3, 5000)
    projector = RandomProjector(5000, 16, seed=0)
    with network_precision("bf16"):
        inside = projector.project(grads)
    torch.testing.assert_close(inside, projector.project(grads), rtol=0, atol=0)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"), network_precision("fp16"):
        pass


def test_sampling_and_measurement_run_under_bf16():
    """Every network output is brought back to float32 (``full_precision``),
    so writes into float32 buffers (the sampler's) work under autocast."""
    from ldsbench.diffusion.precision import full_precision
    from ldsbench.diffusion.sampling import ddpm_sample

    unet, scheduler, train, _ = tiny_model_and_images(2)
    with network_precision("bf16"):
        samples = ddpm_sample(unet, scheduler, 3, 4, seed=0, batch_size=2)
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
    assert full_precision(torch.ones(1, dtype=torch.float64)).dtype == torch.float64
