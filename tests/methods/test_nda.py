"""NDA (``methods.nda``) against a direct computation of the empirical
denoiser's posterior weights, over images, patches and pooled patches."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ldsbench.methods import nda
from ldsbench.spec.config import load_schema
from ldsbench.spec.measurement_types import MEASUREMENT_TYPES


def _images(count, seed, shape=(2, 5, 4)):
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def _softmax(logits):
    return torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()


def test_whole_images_get_the_posterior_weights_of_the_empirical_denoiser():
    noisy, train, scale, std = _images(3, 0), _images(6, 1), 0.8, 0.6
    weights = nda.nda_weights(noisy, train, scale, std)
    for q in range(3):
        logits = torch.stack([-((noisy[q] - scale * y) ** 2).sum() / (2 * std**2) for y in train])
        torch.testing.assert_close(weights[q], _softmax(logits))


def _patch(image, row, col, patch, fill):
    """The p x p patch whose top-left corner is (row - (p - 1) // 2, col - (p - 1) // 2), entries past the edge ``fill``."""
    half = (patch - 1) // 2
    out = torch.full((image.shape[0], patch, patch), fill, dtype=image.dtype)
    for a, b in itertools.product(range(patch), repeat=2):
        r, c = row + a - half, col + b - half
        if 0 <= r < image.shape[1] and 0 <= c < image.shape[2]:
            out[:, a, b] = image[:, r, c]
    return out


def _direct_weights(noisy, train, scale, std, patch, topk, mask, pool=lambda p: p):
    """Softmax over images and positions of -|pool(x patch) - pool(s y patch)|^2 / (2 sigma^2), summed per image."""
    height, width = noisy.shape[2:]
    pad = (patch - 1) // 2
    positions = list(itertools.product(range(height + 2 * pad - patch + 1), range(width + 2 * pad - patch + 1)))
    weights = torch.zeros(len(noisy), len(train), dtype=torch.float64)
    for q in range(len(noisy)):
        for row, col in positions:
            query = pool(_patch(noisy[q], row, col, patch, mask))
            logits = torch.tensor([[-((query - pool(_patch(scale * y, r, c, patch, mask))) ** 2).sum() / (2 * std**2) for r, c in positions] for y in train])
            posterior = torch.softmax(logits.flatten(), 0).view_as(logits)
            weights[q] += posterior.sum(1) if topk is None else posterior.topk(topk, dim=1).values.sum(1)
    return weights


@pytest.mark.parametrize("topk", [None, 3])
def test_patches_get_the_posterior_weights_over_images_and_positions(topk):
    noisy, train, scale, std, patch, mask = _images(2, 2), _images(3, 3), 0.9, 0.45, 3, 10.0
    weights = nda.nda_weights(noisy, train, scale, std, patch=patch, topk=topk, mask_value=mask, kernel_batch=5)
    torch.testing.assert_close(weights, _direct_weights(noisy, train, scale, std, patch, topk, mask))
    if topk is None:  # every query patch distributes one unit of weight
        torch.testing.assert_close(weights.sum(1), torch.full((2,), 20.0, dtype=torch.float64))


def _pool_2x2(patch):
    """The authors' projection (get_projection_matrix_crop): each 2 x 2 block summed and halved."""
    channels, side = patch.shape[0], patch.shape[1] // 2
    return patch.reshape(channels, side, 2, side, 2).sum((2, 4)) / 2


def test_two_scales_mix_patch_weights_and_pooled_patch_weights():
    noisy, train, scale, std, mask = _images(2, 4), _images(3, 5), 0.7, 0.7, 10.0
    weights = nda.nda_weights(noisy, train, scale, std, patch=3, topk=4, mask_value=mask, two_scale={"patch": 4, "alpha": 0.25}, kernel_batch=7)
    pooled = _direct_weights(noisy, train, scale, std, 4, 4, mask, pool=_pool_2x2)
    expected = 0.25 * _direct_weights(noisy, train, scale, std, 3, 4, mask) + 0.75 * pooled
    torch.testing.assert_close(weights, expected)


def test_pooled_patches_must_be_even():
    with pytest.raises(ValueError, match="two_scale.patch must be even"):
        nda.pooled_patch_weights(_images(1, 0), _images(2, 1), 1.0, 1.0, patch=3)


def _job(measurements, **method):
    schema_defaults = {key: value.get("default") for key, value in load_schema()["$defs"]["nda_method"]["properties"].items() if key != "type"}
    settings = {**schema_defaults, "type": "nda", "patch": 3, "topk": 5, **method}
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    return SimpleNamespace(
        method=settings,
        measurements={name: {"type": kind} for name, kind in measurements.items()},
        queries=_images(3, 6, (1, 6, 6)).float(),
        train=_images(8, 7, (1, 6, 6)).float(),
        scheduler=scheduler,
    )


def test_scores_are_the_weights_at_each_timestep_signed_by_orientation():
    job = _job({"loss": "loss", "elbo": "elbo"}, timestep=100, timestep_grid=[300, 100])
    values, scores = nda.score_nda(job)
    assert values == [100.0, 300.0]
    assert {name: s.shape for name, s in scores.items()} == {"loss": (2, 3, 8), "elbo": (2, 3, 8)}
    assert MEASUREMENT_TYPES["loss"].orientation != MEASUREMENT_TYPES["elbo"].orientation
    np.testing.assert_array_equal(scores["loss"], -scores["elbo"])  # lower- vs higher-is-better
    abar = float(job.scheduler.alphas_cumprod[300])
    noisy = abar**0.5 * job.queries + (1 - abar) ** 0.5 * nda.shared_noise((1, 6, 6), 300, 0, 0)
    expected = nda.nda_weights(noisy, job.train, abar**0.5, (1 - abar) ** 0.5, patch=3, topk=5, mask_value=10.0)
    np.testing.assert_allclose(scores["elbo"][1], expected.numpy(), rtol=1e-6)


def test_draws_average_shared_noises():
    job = _job({"elbo": "elbo"}, draws=2, seed=3)
    two = nda.score_nda(job)[1]["elbo"][0]
    abar = float(job.scheduler.alphas_cumprod[100])
    single = [
        nda.nda_weights(
            abar**0.5 * job.queries + (1 - abar) ** 0.5 * nda.shared_noise((1, 6, 6), 100, 3, draw), job.train, abar**0.5, (1 - abar) ** 0.5, patch=3, topk=5
        )
        for draw in range(2)
    ]
    assert not torch.allclose(*single)
    np.testing.assert_allclose(two, ((single[0] + single[1]) / 2).numpy(), rtol=1e-6)
