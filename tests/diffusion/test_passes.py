"""Compiled and channels-last passes (ldsbench.diffusion.passes) give the
eager network's losses, in measurement and in training, and the default
runs the eager network itself.

Tolerance: compiled and channels-last kernels sum in another order, so
float32 losses agree to rounding; the tests allow 1e-4 relative."""

import torch

from ldsbench.data.image_sets import load_digits_split
from ldsbench.diffusion.model import build_scheduler
from ldsbench.diffusion.passes import network_passes, prepare_network, release_network
from ldsbench.diffusion.training import TrainingSettings, train_diffusion_model
from ldsbench.measurement.estimators import estimate
from ldsbench.spec.network_passes import NetworkPasses
from tiny_models import UNET, tiny_model_and_images

MEASUREMENT = {"type": "loss", "draws": 8, "strata": 4, "seed": 0}
TOLERANCE = dict(rtol=1e-4, atol=1e-6)


def test_the_default_passes_run_the_unet_itself():
    unet, *_ = tiny_model_and_images()
    assert prepare_network(unet, NetworkPasses()) is unet


def _measured(key):
    unet, scheduler, _, queries = tiny_model_and_images(n_queries=4)
    with network_passes(key) as passes:
        network = prepare_network(unet, passes)
        result = estimate(network, scheduler, queries, MEASUREMENT)
    release_network(unet, passes)
    return unet, result.mean


def test_channels_last_measures_the_eager_losses_and_restores_the_layout():
    eager_unet, eager = _measured("fp32")
    unet, channels_last = _measured("fp32+channels_last")
    torch.testing.assert_close(channels_last, eager, **TOLERANCE)
    for name, value in unet.state_dict().items():
        assert value.is_contiguous(), f"{name} is still channels-last"
        torch.testing.assert_close(value, eager_unet.state_dict()[name], rtol=0, atol=0)


def _training_losses(key, tmp_path):
    images = torch.from_numpy(load_digits_split(16, 0, 0)[0].images)
    settings = TrainingSettings(steps=3, batch_size=8, learning_rate=1e-3, checkpoint_every=100, seed=0)
    losses = []
    with network_passes(key) as passes:
        unet = train_diffusion_model(images, UNET, build_scheduler({}), settings, tmp_path / key, lambda step, loss: losses.append(loss), passes=passes)
    return losses, unet


def test_compiled_channels_last_passes_measure_and_train_as_eager_ones(tmp_path):
    """One compilation each of the forward pass (measurement) and of the
    forward and backward passes (training), about a minute on a CPU."""
    _, eager = _measured("fp32")
    _, compiled = _measured("fp32+compile+channels_last")
    torch.testing.assert_close(compiled, eager, **TOLERANCE)

    eager_losses, eager_unet = _training_losses("fp32", tmp_path)
    compiled_losses, compiled_unet = _training_losses("fp32+compile+channels_last", tmp_path)
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), **TOLERANCE)
    state = compiled_unet.state_dict()
    assert list(state) == list(eager_unet.state_dict()), "compiling keeps the state-dict keys"
    for name, value in state.items():
        assert value.is_contiguous()
        # Adam divides each gradient by its own scale, so a weight whose
        # gradient is near zero can move by a different fraction of a step:
        # weights agree to a tenth of one step (learning rate 1e-3).
        torch.testing.assert_close(value, eager_unet.state_dict()[name], rtol=0, atol=1e-4)
