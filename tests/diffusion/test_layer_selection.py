"""Influence restricted to some layers: K-FAC is block-diagonal over modules,
so the scores of complementary layer sets add up to the scores of all."""

import copy

import numpy as np
import pytest

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules, build_unet, module_mask
from ldsbench.methods.influence import influence_scores
from tiny_models import UNET, tiny_model_and_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_module_mask_selects_whole_modules():
    unet = build_unet(UNET)
    sizes = {name: m.weight.numel() for name, m in attributed_modules(unet)}
    assert module_mask(unet, None).sum().item() == sum(sizes.values())
    mask = module_mask(unet, r"^down_blocks")
    assert mask.sum().item() == sum(n for name, n in sizes.items() if name.startswith("down_blocks"))
    with pytest.raises(ValueError, match="matches no attributed module; names are: conv_in"):
        module_mask(unet, "^nope")


def test_scores_of_complementary_layer_sets_add_up():
    unet, scheduler, train, queries = tiny_model_and_images()
    data = NoisedTrainingData(train, scheduler, draws_per_example=2, seed=0)
    names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
    basis = fit_kronecker_eigenbasis(
        FlatNoisePredictor(copy.deepcopy(unet)).double(), names, data, CurvatureSettings(kind="ekfac"), num_data=data.num_data, batch_size_fn=batch_size_of
    )

    def scores(modules):
        return influence_scores(unet, scheduler, train, queries, basis, [1e-3], measurement="loss", train_draws=2, query_draws=4, seed=0, modules=modules)

    everything, down, rest = scores(None), scores(r"^down_blocks"), scores(r"^(?!down_blocks)")
    np.testing.assert_allclose(down + rest, everything, rtol=1e-4, atol=1e-6 * np.abs(everything).max())
    assert np.abs(down).max() > 0 and np.abs(rest).max() > 0
