"""Measurements use common random numbers and do not depend on the batch size."""

import numpy as np
import pytest
import torch

from ldsbench.measurement import NonFiniteMeasurementError, get_measurement, measure
from ldsbench.model import build_scheduler, build_unet
from ldsbench.noise import BLOCK, noise_draws

UNET = dict(
    sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    norm_num_groups=4, attention_head_dim=8, add_attention=False,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(UNET).eval(), build_scheduler({})


def test_draws_are_a_pure_function_of_keys():
    t_all, eps_all = noise_draws(7, 3, 0, 3 * BLOCK, (1, 8, 8), 1000)
    t_mid, eps_mid = noise_draws(7, 3, BLOCK - 5, 17, (1, 8, 8), 1000)
    assert torch.equal(t_mid, t_all[BLOCK - 5 : BLOCK + 12]) and torch.equal(eps_mid, eps_all[BLOCK - 5 : BLOCK + 12])
    t_other, _ = noise_draws(7, 4, 0, BLOCK, (1, 8, 8), 1000)
    assert not torch.equal(t_other, t_all[:BLOCK])
    assert t_all.min() >= 0 and t_all.max() < 1000


def test_measurement_is_independent_of_batch_size(model):
    unet, scheduler = model
    queries = torch.rand(5, 1, 8, 8) * 2 - 1
    results = [measure(unet, scheduler, queries, "loss", 70, seed=3, batch_size=b) for b in (1, 16, 333)]
    for mean, stderr in results[1:]:
        np.testing.assert_allclose(mean, results[0][0], rtol=1e-5)
        np.testing.assert_allclose(stderr, results[0][1], rtol=1e-4)
    assert (results[0][1] > 0).all()


def test_measurement_matches_a_direct_computation(model):
    unet, scheduler = model
    query = torch.rand(1, 1, 8, 8) * 2 - 1
    mean, _ = measure(unet, scheduler, query, "loss", 20, seed=1, batch_size=7)
    from ldsbench.noise import stream_seed

    t, eps = noise_draws(stream_seed(1, "measure", "loss"), 0, 0, 20, (1, 8, 8), 1000)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = scheduler.add_noise(query.expand(20, -1, -1, -1), eps, t)
    assert torch.allclose(x_t, abar.sqrt() * query + (1 - abar).sqrt() * eps, atol=1e-6)
    with torch.no_grad():
        expected = (unet(x_t, t).sample - eps).pow(2).mean().item()
    assert mean[0] == pytest.approx(expected, rel=1e-5)


def test_orientation_is_recorded():
    assert get_measurement("loss").orientation == "lower_is_better"
    with pytest.raises(ValueError, match="'elbo' is not one of"):
        get_measurement("elbo")


def test_non_finite_measurement_stops(model):
    unet, scheduler = model
    queries = torch.zeros(2, 1, 8, 8)
    queries[1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteMeasurementError, match=r"queries \[1\]"):
        measure(unet, scheduler, queries, "loss", 8, seed=0)
