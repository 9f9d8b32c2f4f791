"""Layouts of the draws averaged in an attribution gradient (``noise.GradientDraws``)."""

import pytest
import torch

from ldsbench.attribution.gradients import iter_example_gradients
from ldsbench.diffusion.noise import GradientDraws, content_key, noise_draws
from ldsbench.spec.config import ConfigError, validate_config
from tiny_models import tiny_model_and_images
from workflow_api import default_config, with_changes

SHAPE, T = (1, 4, 4), 1000


def test_uniform_draws_are_the_plain_common_random_numbers():
    t, eps = GradientDraws(16).draws(5, 9, 0, 16, SHAPE, T)
    t_plain, eps_plain = noise_draws(5, 9, 0, 16, SHAPE, T)
    assert torch.equal(t, t_plain) and torch.equal(eps, eps_plain)


@pytest.mark.parametrize("count", [8, 16, 100])
def test_stratified_timesteps_put_one_draw_in_each_stratum(count):
    t, _ = GradientDraws(count, "stratified").draws(5, 9, 0, count, SHAPE, T)
    strata = torch.div(t * count, T, rounding_mode="floor")
    assert torch.equal(strata, torch.arange(count))


def test_antithetic_draws_pair_each_timestep_with_eps_and_minus_eps():
    t, eps = GradientDraws(16, "stratified", antithetic=True).draws(5, 9, 0, 16, SHAPE, T)
    assert torch.equal(t[0::2], t[1::2]) and torch.equal(eps[0::2], -eps[1::2])
    assert torch.equal(torch.div(t[0::2] * 8, T, rounding_mode="floor"), torch.arange(8))
    with pytest.raises(ValueError, match="even with antithetic"):
        GradientDraws(15, antithetic=True)


@pytest.mark.parametrize("layout", [GradientDraws(40, "stratified"), GradientDraws(40, "stratified", antithetic=True), GradientDraws(40, common=True)])
def test_draws_do_not_depend_on_how_they_are_split_into_passes(layout):
    t, eps = layout.draws(5, 9, 0, 40, SHAPE, T)
    parts = [layout.draws(5, 9, start, count, SHAPE, T) for start, count in ((0, 7), (7, 30), (37, 3))]
    assert torch.equal(t, torch.cat([p[0] for p in parts])) and torch.equal(eps, torch.cat([p[1] for p in parts]))


def test_common_draws_are_shared_by_every_example_and_others_are_not():
    for common in (False, True):
        layout = GradientDraws(16, "stratified", common=common)
        (t1, e1), (t2, e2) = (layout.draws(5, key, 0, 16, SHAPE, T) for key in (11, 12))
        assert (torch.equal(t1, t2) and torch.equal(e1, e2)) == common


def test_common_draws_give_every_example_its_gradient_whatever_its_row():
    unet, scheduler, train, _ = tiny_model_and_images(n_train=4)
    layout = GradientDraws(8, "stratified", common=True)
    grads = torch.cat([g for _, g in iter_example_gradients(unet, scheduler, train, "loss", layout, 3, batch_examples=3, progress=False)])
    reversed_grads = torch.cat([g for _, g in iter_example_gradients(unet, scheduler, train.flip(0), "loss", layout, 3, batch_examples=2, progress=False)])
    torch.testing.assert_close(grads, reversed_grads.flip(0), rtol=1e-5, atol=1e-7)
    assert len({content_key(image) for image in train}) == 4  # distinct examples, shared draws


def test_odd_draws_with_antithetic_pairs_are_named_before_any_job():
    changes = {"methods.trak.gradient_draws": {"timesteps": "stratified", "antithetic": True, "common": False}, "methods.trak.query_draws": 63}
    with pytest.raises(ConfigError, match=r"methods\.trak\.query_draws: 63 is odd"):
        validate_config(with_changes(default_config(), changes))


def test_gradient_draws_are_filled_for_every_gradient_method():
    config = validate_config(default_config())
    for name in ("ekfac_influence", "trak", "dtrak", "journey_trak", "das", "tracin"):
        assert set(config["methods"][name]["gradient_draws"]) == {"timesteps", "antithetic", "common"}
    assert "gradient_draws" not in config["methods"]["pixel_similarity"]


def test_every_gradient_method_defaults_to_its_authors_layout():
    from ldsbench.spec.method_types import METHOD_TYPES

    methods = validate_config(default_config())["methods"]
    assert (methods["das"]["train_draws"], methods["das"]["query_draws"]) == (methods["trak"]["train_draws"], methods["trak"]["query_draws"])
    for name, method in methods.items():
        if "gradient_draws" in method:
            assert method["gradient_draws"] == METHOD_TYPES[method["type"]].recipe.gradient_draws, name
    # D-TRAK's and DAS's fixed timesteps and shared noise; Mlodozeniec et al.'s and Journey-TRAK's independent draws.
    fixed_common = {"timesteps": "evenly_spaced", "antithetic": False, "common": True}
    independent = {"timesteps": "uniform", "antithetic": False, "common": False}
    assert methods["trak"]["gradient_draws"] == methods["dtrak"]["gradient_draws"] == methods["das"]["gradient_draws"] == fixed_common
    assert methods["ekfac_influence"]["gradient_draws"] == methods["journey_trak"]["gradient_draws"] == independent
    # Every swept lambda spans the spectrum: relative to the mean eigenvalue.
    for name in ("trak", "dtrak", "trak_ensemble", "journey_trak", "das"):
        assert methods[name]["lambda_scale"] == "mean_eigenvalue", name


def test_a_partial_layout_is_refused_naming_the_missing_key():
    with pytest.raises(ConfigError, match=r"methods\.trak\.gradient_draws: 'antithetic' is a required property"):
        validate_config(with_changes(default_config(), {"methods.trak.gradient_draws": {"timesteps": "uniform", "common": False}}))


@pytest.mark.parametrize("count, antithetic", [(10, False), (100, False), (64, False), (20, True)])
def test_evenly_spaced_timesteps_are_the_authors_range(count, antithetic):
    # D-TRAK's and DAS's range(0, T, T // K), K timesteps, whenever K divides T;
    # otherwise the K timesteps floor(j T / K), spread over the whole schedule.
    t, eps = GradientDraws(count, "evenly_spaced", antithetic=antithetic).draws(5, 9, 0, count, SHAPE, T)
    n = count // 2 if antithetic else count
    expected = torch.tensor([j * T // n for j in range(n)])
    assert torch.equal(t[::2] if antithetic else t, expected)
    if T % n == 0:
        assert expected.tolist() == list(range(0, T, T // n))
    if antithetic:
        assert torch.equal(t[0::2], t[1::2]) and torch.equal(eps[0::2], -eps[1::2])


def test_common_draws_are_one_stream_for_both_sides_and_every_output_function():
    # The noise re-seeded per timestep in D-TRAK's code: a query's draw d is
    # every training example's draw d, whatever the output function.
    common, own = GradientDraws(8, "evenly_spaced", common=True), GradientDraws(8, "evenly_spaced")
    assert common.stream(3, "train_gradient", "loss") == common.stream(3, "query_gradient", "squared_norm") != common.stream(4, "train_gradient", "loss")
    assert own.stream(3, "train_gradient", "loss") != own.stream(3, "query_gradient", "loss")
    unet, scheduler, train, queries = tiny_model_and_images(n_train=3)
    from ldsbench.attribution.scoring import query_gradients, training_gradient_batches

    # A query equal to a training image gets that image's gradient exactly.
    same = train[:1]
    train_grad = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, same, "loss", common, 7, progress=False)])
    query_grad = query_gradients(unet, scheduler, same, "loss", common, 7, progress=False)
    torch.testing.assert_close(train_grad, query_grad, rtol=0, atol=0)
    own_query = query_gradients(unet, scheduler, same, "loss", own, 7, progress=False)
    assert not torch.allclose(own_query, train_grad)
