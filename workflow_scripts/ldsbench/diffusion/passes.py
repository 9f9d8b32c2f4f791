"""How training and measurement jobs run the network (``NetworkPasses``,
``ldsbench.spec.network_passes``): at a precision
(``ldsbench.diffusion.precision``), and optionally compiled
(``torch.compile``) and in channels-last memory format.

A job enters ``network_passes(key)`` once and runs its passes through
``prepare_network(unet, passes)``: the UNet itself when no option is on, so
the default path is the eager network, bit for bit. Jobs that take gradients
for attribution never compile, so curvature and scores are computed through
the eager network. Compiled passes draw dropout from the same generator as
eager ones (inductor's ``fallback_random``): a compiled training sees the
same random numbers as an eager one and differs from it by rounding alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ldsbench.diffusion.precision import network_precision
from ldsbench.spec.network_passes import NetworkPasses


@contextlib.contextmanager
def network_passes(key: str, device=None):
    """Within the block the network runs at the precision of ``key`` (a
    ``NetworkPasses`` key such as "fp32" or "bf16+compile"); yields the
    ``NetworkPasses``."""
    passes = NetworkPasses.from_key(key)
    with network_precision(passes.precision, device):
        yield passes


@dataclass
class _Output:
    sample: torch.Tensor


class ChannelsLastInputs(torch.nn.Module):
    """Runs ``unet`` (whose weights are channels-last) on channels-last inputs
    and returns its output in contiguous memory format, so everything after
    the network sees the layout it always does."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timesteps):
        output = self.unet(sample.contiguous(memory_format=torch.channels_last), timesteps).sample
        return _Output(output.contiguous())


def prepare_network(unet, passes: NetworkPasses):
    """The module the job's passes run through: ``unet`` put in channels-last
    memory format (in place) and compiled (a wrapper sharing its parameters:
    ``unet`` itself stays eager and keeps its state-dict keys), as ``passes``
    says. With neither option, ``unet`` itself."""
    network = unet
    if passes.compile:
        from torch._inductor import config as inductor_config

        inductor_config.fallback_random = True
        network = torch.compile(unet)
    if passes.channels_last:
        unet.to(memory_format=torch.channels_last)
        network = ChannelsLastInputs(network)
    return network


def measuring_network(unet, network, measurement: dict):
    """The module measurement ``measurement`` runs through: the prepared
    ``network`` for Monte Carlo types, the eager ``unet`` for the ODE
    log-likelihood, which differentiates through the network."""
    from ldsbench.spec.measurement_types import measurement_type

    return network if measurement_type(measurement["type"]).kind == "monte_carlo" else unet


def release_network(unet, passes: NetworkPasses):
    """``unet`` back in contiguous memory format after ``prepare_network``
    (safetensors writes contiguous tensors only); returns it."""
    if passes.channels_last:
        unet.to(memory_format=torch.contiguous_format)
    return unet
