"""The NDA example of an external method (``docs/examples/nda.py``) against
a direct computation of the empirical denoiser's posterior weights."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from workflow_api import ROOT

spec = importlib.util.spec_from_file_location("nda_example", ROOT / "docs" / "examples" / "nda.py")
nda = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nda)


def _images(count, seed, shape=(2, 5, 4)):
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def test_whole_images_get_the_posterior_weights_of_the_empirical_denoiser():
    noisy, train, scale, std = _images(3, 0), _images(6, 1), 0.8, 0.6
    weights = nda.nda_weights(noisy, train, scale, std)
    for q in range(3):
        logits = torch.stack([-((noisy[q] - scale * y) ** 2).sum() / (2 * std**2) for y in train])
        torch.testing.assert_close(weights[q], torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum())


def _patch(image, row, col, patch, fill):
    """The p x p patch centred at (row, col), entries past the edge set to ``fill``."""
    half = (patch - 1) // 2
    out = torch.full((image.shape[0], patch, patch), fill, dtype=image.dtype)
    for a, b in itertools.product(range(patch), repeat=2):
        r, c = row + a - half, col + b - half
        if 0 <= r < image.shape[1] and 0 <= c < image.shape[2]:
            out[:, a, b] = image[:, r, c]
    return out


@pytest.mark.parametrize("topk", [None, 3])
def test_patches_get_the_posterior_weights_over_images_and_positions(topk):
    noisy, train, scale, std, patch, mask = _images(2, 2), _images(3, 3), 0.9, 0.45, 3, 10.0
    height, width = noisy.shape[2:]
    positions = list(itertools.product(range(height), range(width)))
    weights = nda.nda_weights(noisy, train, scale, std, patch=patch, topk=topk, mask_value=mask, query_batch=5)
    for q in range(2):
        expected = torch.zeros(len(train), dtype=torch.float64)
        for row, col in positions:
            query = _patch(noisy[q], row, col, patch, mask)
            logits = torch.tensor([[-((query - _patch(scale * y, r, c, patch, mask)) ** 2).sum() / (2 * std**2) for r, c in positions] for y in train])
            posterior = torch.softmax(logits.flatten(), 0).view_as(logits)
            expected += posterior.sum(1) if topk is None else posterior.topk(topk, dim=1).values.sum(1)
        torch.testing.assert_close(weights[q], expected)
    # Every query patch distributes one unit of weight.
    if topk is None:
        torch.testing.assert_close(weights.sum(1), torch.full((2,), float(height * width), dtype=torch.float64))
