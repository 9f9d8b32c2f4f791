"""The NDA example of an external method (``docs/examples/nda.py``), written
through the external-method interface before NDA became a method type,
gives the method type's weights (``methods.nda``, tested against a direct
computation in ``test_nda.py``)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ldsbench.methods import nda
from workflow_api import ROOT

spec = importlib.util.spec_from_file_location("nda_example", ROOT / "docs" / "examples" / "nda.py")
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)


def _images(count, seed, shape=(2, 6, 5)):
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("patch, topk", [(None, None), (3, None), (3, 4), (5, 7)])
def test_the_example_gives_the_method_types_weights(patch, topk):
    noisy, train = _images(3, 0), _images(7, 1)
    torch.testing.assert_close(
        example.nda_weights(noisy, train, 0.8, 0.6, patch=patch, topk=topk, mask_value=10.0, query_batch=4),
        nda.nda_weights(noisy, train, 0.8, 0.6, patch=patch, topk=topk, mask_value=10.0, kernel_batch=6),
    )


def test_the_example_shares_the_method_types_noise():
    generator = torch.Generator().manual_seed(2 * 1000 + 100 + 1_000_003 * 1)
    torch.testing.assert_close(torch.randn((1, 4, 4), generator=generator), nda.shared_noise((1, 4, 4), 100, 2, 1))
