"""How many measurement draws the LDS needs: the Monte Carlo share of the
ground truth's spread between subsets, against closed forms and a simulated
ground truth, and the replicates the measurement keeps for it."""

import numpy as np
import pandas as pd
import pytest
import torch

from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.measurement.draw_precision import (
    precision_per_query,
    recommendation,
    recommended_measurements,
    replicates_for_mean_share,
    replicates_needed,
    share,
)
from ldsbench.measurement.estimators import estimate, measurement_design
from tiny_models import UNET

pytestmark = pytest.mark.usefixtures("one_thread")


def simulated(rng, subsets, seeds, queries, replicates, spread, noise, shared=0.0):
    """v_jkqr = mu_jq + c_qr + e_jkqr: subset effects of sd ``spread``, a
    per-replicate shift common to every model of sd ``shared`` (common random
    numbers), and per-model noise of sd ``noise`` (so a seed mean's noise has
    variance noise^2 / seeds per replicate)."""
    mu = rng.normal(0, spread, (subsets, 1, queries, 1))
    common = rng.normal(0, shared, (1, 1, queries, replicates))
    return mu + common + rng.normal(0, noise, (subsets, seeds, queries, replicates))


def test_the_estimates_follow_their_definitions_on_a_small_array():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 2, 3, 5))
    table = precision_per_query(v)
    a = v.mean(axis=1)  # [J, Q, R]
    for q in range(3):
        d = a[:, q, :] - a[:, q, :].mean(axis=0)
        sigma2 = 4 / 3 * np.mean([np.var(d[j], ddof=1) for j in range(4)])
        between = np.var(a[:, q, :].mean(axis=1), ddof=1) - sigma2 / 5
        assert table.loc[q, "monte_carlo_variance"] == pytest.approx(sigma2)
        assert table.loc[q, "between_variance"] == pytest.approx(between)
        expected = 1.0 if between <= 0 else (sigma2 / 5) / (between + sigma2 / 5)
        assert share(sigma2, between, 5) == pytest.approx(expected)


def test_noise_common_to_every_model_does_not_count():
    """Common random numbers: a shift shared by every model at a replicate
    cannot change a rank, and changes neither estimate."""
    rng = np.random.default_rng(1)
    v = simulated(rng, 6, 2, 4, 8, spread=1.0, noise=0.5)
    shifted = v + rng.normal(0, 100.0, (1, 1, 4, 8))
    np.testing.assert_allclose(
        precision_per_query(shifted)[["monte_carlo_variance", "between_variance"]],
        precision_per_query(v)[["monte_carlo_variance", "between_variance"]],
        rtol=1e-8,
        atol=1e-9,
    )


def test_the_estimates_are_unbiased_for_the_simulated_variances():
    """sigma^2 = noise^2 / K per replicate, V = spread^2: averaged over many
    queries the estimates recover both."""
    rng = np.random.default_rng(2)
    v = simulated(rng, 10, 4, 4000, 6, spread=0.3, noise=0.8, shared=2.0)
    table = precision_per_query(v)
    assert table["monte_carlo_variance"].mean() == pytest.approx(0.8**2 / 4, rel=0.02)
    assert table["between_variance"].mean() == pytest.approx(0.3**2, rel=0.05)


def test_the_share_at_the_replicates_needed_meets_the_target_and_one_fewer_does_not():
    sigma2, between = np.array([1.0, 0.2, 3.0]), np.array([0.01, 0.5, 0.02])
    needed = replicates_needed(sigma2, between, 0.05)
    assert (share(sigma2, between, needed) <= 0.05).all()
    assert (share(sigma2, between, needed - 1) > 0.05)[needed > 1].all()
    assert needed[0] == np.ceil(1.0 * 0.95 / (0.05 * 0.01))
    assert replicates_needed(np.array([1.0]), np.array([-0.1]), 0.05)[0] == np.inf
    assert share(np.array([1.0]), np.array([0.0]), 10)[0] == 1.0


def test_the_recommendation_is_the_fewest_replicates_whose_mean_share_meets_the_target():
    per_query = pd.DataFrame({"monte_carlo_variance": [1.0, 0.2, 3.0, 1.0], "between_variance": [0.01, 0.5, 0.02, -1.0]})
    r = replicates_for_mean_share(per_query, 0.05)
    resolved = per_query[per_query["between_variance"] > 0]
    assert share(resolved["monte_carlo_variance"], resolved["between_variance"], r).mean() <= 0.05
    assert share(resolved["monte_carlo_variance"], resolved["between_variance"], r - 1).mean() > 0.05
    reading = recommendation(per_query, replicate_size=16, configured_draws=128, target=0.05)
    assert reading["recommended_draws"] == r * 16 and reading["draw_ratio"] == r * 16 / 128
    assert reading["unresolved_queries"] == 1 and reading["queries"] == 4
    # The configured 128 draws are 8 replicates of 16.
    assert reading["mean_share"] == pytest.approx(share(resolved["monte_carlo_variance"], resolved["between_variance"], 8).mean())


def test_the_overlay_sets_the_recommended_draws_in_the_configured_order():
    """A measurement whose pilot finds no spread gets no recommendation and
    keeps its configured draws; every measurement is named, in the
    configured order, so merging the file cannot reorder them."""
    resolved = pd.DataFrame({"monte_carlo_variance": [1.0, 0.2], "between_variance": [0.01, 0.5]})
    unresolved = pd.DataFrame({"monte_carlo_variance": [1.0, 0.2], "between_variance": [-0.01, 0.0]})
    readings = pd.DataFrame(
        [
            {"measurement": "elbo", **recommendation(unresolved, replicate_size=50, configured_draws=2500, target=0.05)},
            {"measurement": "loss", **recommendation(resolved, replicate_size=50, configured_draws=5000, target=0.05)},
        ]
    )
    overlay = recommended_measurements(readings, {"loss": 5000, "elbo": 2500})
    expected = 50 * replicates_for_mean_share(resolved, 0.05)
    assert overlay == {"measurements": {"loss": {"draws": expected}, "elbo": {"draws": 2500}}}
    assert list(overlay["measurements"]) == ["loss", "elbo"]
    assert type(overlay["measurements"]["loss"]["draws"]) is int


def test_bad_replicates_are_refused():
    with pytest.raises(ValueError, match="3 subsets"):
        precision_per_query(np.zeros((2, 2, 3, 4)))
    with pytest.raises(ValueError, match="finite"):
        precision_per_query(np.full((3, 2, 3, 4), np.nan))
    with pytest.raises(ValueError, match="target share"):
        replicates_needed([1.0], [1.0], 1.5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(UNET).eval(), build_scheduler({})


@pytest.mark.parametrize(
    "settings",
    [{"type": "loss", "draws": 64, "strata": 8}, {"type": "elbo", "draws": 32, "strata": 4, "levels": 17, "antithetic": True}],
)
def test_the_first_replicates_are_the_measurement_at_fewer_draws(model, settings):
    """The mean of the first r kept replicates is what measuring with r
    replicates' draws gives (the draws are a pure function of their index)."""
    unet, scheduler = model
    queries = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    full = estimate(unet, scheduler, queries, settings, keep_replicates=True)
    size = measurement_design(settings).replicate_size
    assert full.replicates.shape == (3, settings["draws"] // size)
    np.testing.assert_array_equal(full.replicates.mean(axis=1), full.mean)
    fewer = estimate(unet, scheduler, queries, {**settings, "draws": 2 * size})
    np.testing.assert_allclose(full.replicates[:, :2].mean(axis=1), fewer.mean, rtol=1e-6)
    assert estimate(unet, scheduler, queries, settings).replicates is None
