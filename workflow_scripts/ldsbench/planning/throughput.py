"""Throughput of a config's UNet on the present device: the two rates the
plan divides its passes by (``plan.DeviceRates``).

- training: draws (one image at one timestep) per second of an AdamW step
  at the training batch, forward and backward, gradients clipped as in
  training;
- forward: draws per second of a measurement's forward pass (no gradient)
  at the measurement batch.

Two rates, because a forward pass is not a fixed fraction of a training
step: on one H200 in fp32 the preset's UNet ran 1024 training and 2242
forward draws a second, a ratio of 2.2 where counting a forward pass as a
third of a step would say 3. Speed does not depend on the weights, so the
model is randomly initialised.
"""

from __future__ import annotations

import time

import torch

from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.diffusion.outputs import noised, per_draw_output
from ldsbench.diffusion.passes import network_passes, prepare_network
from ldsbench.diffusion.precision import network_forward, network_precision


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1, min_seconds: float = 0.0) -> float:
    """Seconds per call of ``fn``: one warm-up call, then at least
    ``repeats`` calls and at least ``min_seconds`` of them."""
    fn()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < repeats or time.perf_counter() - start < min_seconds:
        fn()
        synchronize(device)
        calls += 1
    return (time.perf_counter() - start) / calls


def _draws(unet, scheduler, batch: int, device: torch.device):
    shape = (batch, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x0, noise = torch.randn(shape, device=device), torch.randn(shape, device=device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
    return x0, noise, t


def training_step(unet, scheduler, batch: int, device: torch.device, precision: str, network=None):
    """A closure running one training step of ``batch`` draws, its passes
    through ``network`` (``ldsbench.diffusion.passes.prepare_network``;
    default ``unet``)."""
    network = unet if network is None else network
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x0, noise, t = _draws(unet, scheduler, batch, device)

    def step():
        with network_precision(precision, device):
            loss = torch.nn.functional.mse_loss(network_forward(network, noised(scheduler, x0, noise, t), t), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()

    return step


def measurement_forward(unet, scheduler, batch: int, device: torch.device, precision: str, network=None):
    """A closure running one measurement pass of ``batch`` draws (``loss``)
    through ``network`` (default ``unet``)."""
    network = unet if network is None else network
    x0, noise, t = _draws(unet, scheduler, batch, device)

    def forward():
        with torch.no_grad(), network_precision(precision, device):
            per_draw_output(network, scheduler, x0, noise, t, "loss")

    return forward


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def measure_rates(model: dict, device: torch.device, passes: str, training_batch: int, measurement_batch: int, min_seconds: float = 5.0) -> dict:
    """``{device, precision, training_batch, measurement_batch,
    train_draws_per_second, forward_draws_per_second}`` of the UNet of
    ``model`` (a config's ``model``: ``unet`` and ``scheduler``) on
    ``device``, run as the ``NetworkPasses`` key ``passes`` says (its
    ``precision`` entry), each rate timed over at least ``min_seconds``
    after a warm-up step (which compiles, when asked)."""
    torch.manual_seed(0)
    unet = build_unet(model["unet"]).to(device)
    with network_passes(passes, device) as settings:  # compiled and channels-last as the jobs run them
        network = prepare_network(unet, settings)
    scheduler = build_scheduler(model["scheduler"])
    unet.train()
    train_seconds = timed(training_step(unet, scheduler, training_batch, device, settings.precision, network), device, min_seconds=min_seconds)
    unet.eval()
    forward_seconds = timed(measurement_forward(unet, scheduler, measurement_batch, device, settings.precision, network), device, min_seconds=min_seconds)
    return {
        "device": device_name(device),
        "precision": passes,
        "training_batch": training_batch,
        "measurement_batch": measurement_batch,
        "train_draws_per_second": training_batch / train_seconds,
        "forward_draws_per_second": measurement_batch / forward_seconds,
    }
