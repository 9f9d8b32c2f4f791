"""Tests for ldsbench.attribution.ridge: the Gram matrix streamed in batches
and its spectrum, reused for every lambda."""

import pytest
import torch

from ldsbench.attribution.ridge import GramSpectrum, accumulate_gram
from ldsbench.methods.trak import trak_kernel_scores


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_streamed_gram_and_batched_scoring_match_one_shot():
    query, train = _randn(4, 12, seed=11), _randn(90, 12, seed=12)
    lambdas = [1e-2, 3.0]
    batches = list(train.float().split(25))  # streamed in float32, summed in float64
    gram = accumulate_gram(iter(batches))
    assert gram.dtype == torch.float64 and gram.shape == (12, 12)
    torch.testing.assert_close(gram, train.float().double().T @ train.float().double())
    spectrum = GramSpectrum.from_gram(gram)
    streamed = torch.cat([spectrum.kernel_scores(query, b, lambdas) for b in batches], dim=-1)
    torch.testing.assert_close(streamed, trak_kernel_scores(query, train.float(), lambdas), rtol=1e-9, atol=1e-12)


def test_gram_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="empty"):
        accumulate_gram([])
    with pytest.raises(ValueError, match="batch 1 has 4 features"):
        accumulate_gram([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="square"):
        GramSpectrum.from_gram(torch.zeros(3, 4))
