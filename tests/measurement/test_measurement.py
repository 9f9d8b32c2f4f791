"""Measurements: common random numbers, independence of the batch size,
variance reduction with honest standard errors, the NaN guard, and their
config entries."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.diffusion.noise import BLOCK, Design, design_draws, noise_draws
from ldsbench.diffusion.outputs import simplified_elbo_weights
from ldsbench.measurement.estimators import OUTPUT_FUNCTIONS, NonFiniteMeasurementError, estimate, measure, measurement_defaults, measurement_settings
from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.config import ConfigError, load_schema, validate_config
from ldsbench.spec.measurement_types import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    MEASUREMENT_TYPES,
    NOT_A_QUALITY_MEASURE,
    ORIENTATION_TEXT,
    measurement_gradient_settings,
    measurement_type,
)
from tiny_models import UNET
from workflow_api import ROOT, default_config, with_changes

# One settings entry per type, cheap enough for every test below.
SETTINGS = {
    "loss": {"type": "loss", "draws": 32, "strata": 8},
    "loss_at_t": {"type": "loss_at_t", "timestep": 500, "draws": 16},
    "squared_norm": {"type": "squared_norm", "draws": 32, "strata": 8, "antithetic": True},
    "simplified_elbo": {"type": "simplified_elbo", "draws": 32, "strata": 8},
    "elbo": {"type": "elbo", "draws": 32, "strata": 8, "levels": 17},
}


# Tiny models: one thread is faster than several (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


class GaussianOracle(torch.nn.Module):
    """The exact noise predictor for data N(0, s^2 I) under a DDPM schedule:
    eps*(x_t, t) = sqrt(1 - abar_t) x_t / (abar_t s^2 + 1 - abar_t).

    A model whose error depends strongly on t, like a trained one, in a few
    arithmetic operations. Float timesteps are rounded down.
    """

    def __init__(self, scheduler, scale: float = 0.5):
        super().__init__()
        self.register_buffer("abar", scheduler.alphas_cumprod.clone())
        self.scale = scale
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, timesteps):
        abar = self.abar[timesteps.long()].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        return SimpleNamespace(sample=(1 - abar).sqrt() * x / (abar * self.scale**2 + 1 - abar))


class Recorder(torch.nn.Module):
    """Wraps a model and records every (input, timestep) it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, timesteps):
        self.calls.append((x.detach().clone(), timesteps.detach().clone()))
        return self.model(x, timesteps)


class NaNForQueries(torch.nn.Module):
    """Predicts NaN at small timesteps (t < 50) for inputs whose first pixel
    exceeds their second by more than 1.5: queries with pixels (1, -1) there
    trigger it, queries with (0, 0) cannot at that little noise."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, timesteps):
        out = self.model(x, timesteps).sample
        flat = x.flatten(start_dim=1)
        bad = ((flat[:, 0] - flat[:, 1] > 1.5) & (timesteps < 50)).view(-1, *([1] * (x.dim() - 1)))
        return SimpleNamespace(sample=torch.where(bad, torch.full_like(out, float("nan")), out))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(UNET).eval(), build_scheduler({})


def _queries(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1


# --- draws -------------------------------------------------------------------


def test_draws_are_a_pure_function_of_keys():
    t_all, eps_all = noise_draws(7, 3, 0, 3 * BLOCK, (1, 8, 8), 1000)
    t_mid, eps_mid = noise_draws(7, 3, BLOCK - 5, 17, (1, 8, 8), 1000)
    assert torch.equal(t_mid, t_all[BLOCK - 5 : BLOCK + 12]) and torch.equal(eps_mid, eps_all[BLOCK - 5 : BLOCK + 12])
    t_other, _ = noise_draws(7, 4, 0, BLOCK, (1, 8, 8), 1000)
    assert not torch.equal(t_other, t_all[:BLOCK])
    assert t_all.min() >= 0 and t_all.max() < 1000


@pytest.mark.parametrize("design", [Design(), Design(strata=8), Design(strata=5, antithetic=True)])
def test_design_draws_are_a_pure_function_of_keys(design):
    t_all, eps_all = design_draws(7, 3, 0, 3 * BLOCK, (1, 4, 4), 1000, design)
    t_mid, eps_mid = design_draws(7, 3, BLOCK - 5, 2 * BLOCK, (1, 4, 4), 1000, design)
    assert torch.equal(t_mid, t_all[BLOCK - 5 : 3 * BLOCK - 5]) and torch.equal(eps_mid, eps_all[BLOCK - 5 : 3 * BLOCK - 5])
    t_other, _ = design_draws(7, 4, 0, BLOCK, (1, 4, 4), 1000, design)
    assert not torch.equal(t_other, t_all[:BLOCK])


def test_strata_and_antithetic_pairs():
    strata, num_timesteps = 6, 1000
    design = Design(strata=strata, antithetic=True)
    t, eps = design_draws(1, 0, 0, 10 * design.replicate_size, (1, 2, 2), num_timesteps, design)
    # Pairs share t and have opposite noise.
    assert torch.equal(t[0::2], t[1::2]) and torch.equal(eps[0::2], -eps[1::2])
    # Every replicate has one base draw in each stratum [j T/S, (j+1) T/S).
    stratum = (t[0::2].double() * strata / num_timesteps).floor().long().view(10, strata)
    assert torch.equal(stratum, torch.arange(strata).expand(10, strata))


def test_stratified_timesteps_are_uniform_over_all_strata():
    # T / S is not an integer here; the pooled timesteps must still be uniform.
    num_timesteps, strata, n = 10, 4, 40_000
    t, _ = design_draws(2, 0, 0, n, (1,), num_timesteps, Design(strata=strata))
    counts = np.bincount(t.numpy(), minlength=num_timesteps)
    expected = n / num_timesteps
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))


def test_importance_sampled_timesteps_follow_the_proposal():
    probabilities = torch.tensor([0.0, 0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    n = 40_000
    t, _ = design_draws(3, 0, 0, n, (1,), 5, Design(strata=8), probabilities)
    frequencies = np.bincount(t.numpy(), minlength=5) / n
    assert frequencies[0] == 0
    np.testing.assert_allclose(frequencies, probabilities.numpy(), atol=5 * math.sqrt(0.25 / n))


# --- common random numbers and batch size ------------------------------------------


@pytest.mark.parametrize("kind", list(SETTINGS))
def test_measurement_is_independent_of_batch_size(model, kind):
    unet, scheduler = model
    queries = _queries(3)
    # 5 splits replicates and antithetic pairs across batches.
    results = [estimate(unet, scheduler, queries, SETTINGS[kind], batch_size=b) for b in (5, 16, 333)]
    for result in results[1:]:
        np.testing.assert_allclose(result.mean, results[0].mean, rtol=1e-5)
        np.testing.assert_allclose(result.stderr, results[0].stderr, rtol=1e-4)
    assert (results[0].stderr > 0).all() and (results[0].draws == SETTINGS[kind]["draws"]).all()


@pytest.mark.parametrize("kind", ["loss", "elbo"])
def test_every_model_sees_the_same_draws(model, kind):
    unet, scheduler = model
    torch.manual_seed(1)
    other = build_unet(UNET).eval()
    queries = _queries(3)
    first, second = Recorder(unet), Recorder(other)
    estimate(first, scheduler, queries, SETTINGS[kind], batch_size=16)
    estimate(second, scheduler, queries, SETTINGS[kind], batch_size=16)
    inputs = [torch.cat([x for x, _ in recorder.calls]) for recorder in (first, second)]
    steps = [torch.cat([t for _, t in recorder.calls]) for recorder in (first, second)]
    assert torch.equal(inputs[0], inputs[1]) and torch.equal(steps[0], steps[1])


def test_measurement_matches_a_direct_computation(model):
    unet, scheduler = model
    query = _queries(1, seed=1)
    settings = {"type": "loss", "draws": 20, "strata": 4, "seed": 1}
    mean, stderr = measure(unet, scheduler, query, settings, batch_size=7)
    t, eps = design_draws(stream_seed(1, "measure", "loss"), 0, 0, 20, (1, 8, 8), 1000, Design(strata=4))
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = scheduler.add_noise(query.expand(20, -1, -1, -1), eps, t)
    assert torch.allclose(x_t, abar.sqrt() * query + (1 - abar).sqrt() * eps, atol=1e-6)
    with torch.no_grad():
        per_draw = (unet(x_t, t).sample - eps).pow(2).flatten(start_dim=1).mean(dim=1).double().numpy()
    replicates = per_draw.reshape(5, 4).mean(axis=1)
    assert mean[0] == pytest.approx(per_draw.mean(), rel=1e-5)
    assert stderr[0] == pytest.approx(replicates.std(ddof=1) / math.sqrt(5), rel=1e-4)


def test_loss_at_t_uses_its_timestep_only(model):
    unet, scheduler = model
    recorder = Recorder(unet)
    estimate(recorder, scheduler, _queries(2), SETTINGS["loss_at_t"])
    assert all((t == 500).all() for _, t in recorder.calls)


def test_simplified_elbo_is_the_weighted_sum_over_timesteps():
    # For the oracle, eps - eps*(x_t) = (1 - c_t sqrt(1 - abar_t)) eps - c_t sqrt(abar_t) x0
    # with c_t = sqrt(1 - abar_t) / (abar_t s^2 + 1 - abar_t), so
    # E||eps - eps*||^2 = D (1 - c_t sqrt(1 - abar_t))^2 + c_t^2 abar_t ||x0||^2 exactly.
    scheduler = build_scheduler({"num_train_timesteps": 50})
    oracle = GaussianOracle(scheduler, scale=0.5)
    query = _queries(1, seed=2)
    result = estimate(oracle, scheduler, query, {"type": "simplified_elbo", "draws": 1024, "strata": 16})
    abar = scheduler.alphas_cumprod.double()
    c = (1 - abar).sqrt() / (abar * 0.25 + 1 - abar)
    expected_error = 64 * (1 - c * (1 - abar).sqrt()) ** 2 + c**2 * abar * query.double().pow(2).sum()
    exact = (simplified_elbo_weights(scheduler) * expected_error).sum().item()
    assert abs(result.mean[0] - exact) < 4 * result.stderr[0]
    assert result.stderr[0] < 0.05 * exact


# --- orientation, settings, NaN guard --------------------------------------------------


def test_orientation_is_recorded():
    expected = {
        "loss": LOWER_IS_BETTER,
        "loss_at_t": LOWER_IS_BETTER,
        "squared_norm": NOT_A_QUALITY_MEASURE,
        "simplified_elbo": LOWER_IS_BETTER,
        "elbo": HIGHER_IS_BETTER,
        "log_likelihood": HIGHER_IS_BETTER,
    }
    assert {name: spec.orientation for name, spec in MEASUREMENT_TYPES.items()} == expected
    with pytest.raises(ValueError, match="'likelihood' is not one of"):
        measurement_type("likelihood")
    assert OUTPUT_FUNCTIONS.keys() == MEASUREMENT_TYPES.keys()


def test_settings_that_define_the_output_are_required():
    with pytest.raises(ValueError, match=r"'loss_at_t' needs the settings \['timestep'\]"):
        measurement_settings("loss_at_t")
    assert measurement_gradient_settings({"type": "elbo", "levels": 17, "draws": 999, "seed": 3}) == {"type": "elbo", "levels": 17}
    assert measurement_gradient_settings({"type": "loss", "draws": 5}) == {"type": "loss"}
    assert measurement_settings("loss") == {
        "type": "loss",
        "draws": 128,
        "seed": 0,
        "strata": 16,
        "antithetic": False,
        "target_stderr": None,
        "max_draws": None,
    }


def test_every_measurement_type_has_a_schema_block_and_the_schema_dispatches_on_the_registry():
    schema = load_schema()
    entry = schema["properties"]["measurements"]["additionalProperties"]
    assert entry["properties"]["type"]["enum"] == list(MEASUREMENT_TYPES)
    for name in MEASUREMENT_TYPES:
        assert f"{name}_measurement" in schema["$defs"]
        # The defaults are the schema block's, and a caller cannot change them.
        defaults = measurement_defaults(name)
        defaults["draws"] = -1
        assert measurement_defaults(name)["draws"] > 0


@pytest.mark.parametrize("kind", ["loss", "elbo"])
def test_non_finite_measurement_names_the_queries(model, kind):
    unet, scheduler = model
    queries = torch.zeros(4, 1, 8, 8)
    queries[[1, 3], 0, 0, 0], queries[[1, 3], 0, 0, 1] = 1.0, -1.0
    with pytest.raises(NonFiniteMeasurementError, match=rf"'{kind}' is not finite for queries \[1, 3\]"):
        estimate(NaNForQueries(unet), scheduler, queries, {**SETTINGS[kind], "draws": 64})


def test_nan_query_stops(model):
    unet, scheduler = model
    queries = torch.zeros(2, 1, 8, 8)
    queries[1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteMeasurementError, match=r"queries \[1\]"):
        measure(unet, scheduler, queries, SETTINGS["loss"])


def test_bad_design_is_refused(model):
    unet, scheduler = model
    with pytest.raises(ValueError, match="multiple of strata"):
        measure(unet, scheduler, _queries(1), {"type": "loss", "draws": 24, "strata": 16})


# --- target precision -----------------------------------------------------------


def test_target_stderr_adds_blocks_until_precise_or_capped():
    scheduler = build_scheduler({})
    oracle = GaussianOracle(scheduler)
    queries = _queries(4, seed=3)
    settings = {"type": "loss", "draws": 16, "strata": 4, "seed": 0}
    base = estimate(oracle, scheduler, queries, settings)
    # Two queries are precise enough already, two need more draws.
    target = float(np.sort(base.stderr)[1])
    adaptive = estimate(oracle, scheduler, queries, {**settings, "target_stderr": target, "max_draws": 256})
    assert (adaptive.draws % 16 == 0).all() and (adaptive.draws >= 16).all() and adaptive.draws.max() > 16
    assert ((adaptive.stderr <= target) | (adaptive.draws == 256)).all()
    # Queries already precise enough keep exactly the non-adaptive estimate.
    done = base.stderr <= target
    assert done.sum() == 2 and (adaptive.draws[done] == 16).all()
    np.testing.assert_array_equal(adaptive.mean[done], base.mean[done])


# --- variance reduction ------------------------------------------------------------


def _over_seeds(unet, scheduler, queries, settings, seeds):
    results = [estimate(unet, scheduler, queries, {**settings, "seed": seed}) for seed in seeds]
    return np.stack([r.mean for r in results]), np.stack([r.stderr for r in results])


def test_stratification_is_unbiased_with_honest_errors_on_a_t_dependent_model():
    scheduler = build_scheduler({})
    oracle = GaussianOracle(scheduler)
    queries = _queries(3, seed=4)
    seeds = range(40)
    plain_means, plain_errors = _over_seeds(oracle, scheduler, queries, {"type": "loss", "draws": 64, "strata": 1}, seeds)
    strat_means, strat_errors = _over_seeds(oracle, scheduler, queries, {"type": "loss", "draws": 64, "strata": 16}, seeds)
    difference = plain_means.mean(axis=0) - strat_means.mean(axis=0)
    combined = np.sqrt(plain_means.var(axis=0, ddof=1) / 40 + strat_means.var(axis=0, ddof=1) / 40)
    assert (np.abs(difference) < 4 * combined).all()
    assert (strat_errors.mean(axis=0) < 0.7 * plain_errors.mean(axis=0)).all()
    # The reported standard error matches the spread over independent seeds
    # (with 40 seeds the spread itself is known to about +-11%).
    for means, errors in ((plain_means, plain_errors), (strat_means, strat_errors)):
        ratio = np.mean(errors.mean(axis=0) / means.std(axis=0, ddof=1))
        assert 0.75 < ratio < 1.3, ratio


@pytest.fixture(scope="module")
def trained_tiny_model(tmp_path_factory):
    from ldsbench.data.image_sets import load_digits_split
    from ldsbench.diffusion.training import TrainingSettings, train_diffusion_model

    train, heldout = load_digits_split(64, 4, seed=0)
    settings = TrainingSettings(steps=200, batch_size=32, learning_rate=2e-3, warmup_fraction=0.05, checkpoint_every=10_000)
    unet = train_diffusion_model(torch.from_numpy(train.images), UNET, build_scheduler({}), settings, tmp_path_factory.mktemp("vr"))
    return unet.eval(), build_scheduler({}), torch.from_numpy(heldout.images)


@pytest.mark.slow
@pytest.mark.parametrize(
    "plain, reduced, reduction",
    [
        ({"type": "loss", "draws": 128, "strata": 1}, {"type": "loss", "draws": 128, "strata": 16}, 0.7),
        ({"type": "squared_norm", "draws": 128, "strata": 1}, {"type": "squared_norm", "draws": 128, "strata": 16}, 0.8),
        # Antithetic pairs are unbiased but do not reduce the variance of these
        # even functions of eps; only the expectation and the error are checked.
        ({"type": "loss", "draws": 128, "strata": 1}, {"type": "loss", "draws": 128, "strata": 1, "antithetic": True}, None),
        ({"type": "loss_at_t", "timestep": 100, "draws": 64}, {"type": "loss_at_t", "timestep": 100, "draws": 64, "antithetic": True}, None),
    ],
)
def test_variance_reduction_on_a_trained_model(trained_tiny_model, plain, reduced, reduction):
    unet, scheduler, queries = trained_tiny_model
    seeds = range(24)
    plain_means, plain_errors = _over_seeds(unet, scheduler, queries, plain, seeds)
    reduced_means, reduced_errors = _over_seeds(unet, scheduler, queries, reduced, seeds)
    combined = np.sqrt(plain_means.var(axis=0, ddof=1) / 24 + reduced_means.var(axis=0, ddof=1) / 24)
    assert (np.abs(plain_means.mean(axis=0) - reduced_means.mean(axis=0)) < 4 * combined).all()
    if reduction is not None:
        assert (reduced_errors.mean(axis=0) < reduction * plain_errors.mean(axis=0)).all()
    ratio = np.mean(reduced_errors.mean(axis=0) / reduced_means.std(axis=0, ddof=1))
    assert 0.7 < ratio < 1.4, ratio


@pytest.mark.slow
def test_importance_sampling_reduces_the_elbo_variance(trained_tiny_model):
    """The ELBO's importance-sampled KL terms against the plain estimator
    T L_t with t ~ U{1..T-1} (written out here), on the same model."""
    from ldsbench.diffusion.outputs import noised
    from ldsbench.measurement.elbo import decoder_nll, kl_terms, prior_kl, quantise

    unet, scheduler, queries = trained_tiny_model
    levels, draws, dim = 17, 128, 64
    reduced = estimate(unet, scheduler, queries, {"type": "elbo", "draws": draws, "strata": 16, "levels": levels})
    generator = torch.Generator().manual_seed(9)
    plain_means, plain_errors = [], []
    with torch.no_grad():
        for query in queries:
            x0 = quantise(query, levels).expand(draws, -1, -1, -1)
            eps = torch.randn(draws, 1, 8, 8, generator=generator)
            t = torch.randint(1, 1000, (draws,), generator=generator)
            zeros = torch.zeros_like(t)
            x_first, x_t = noised(scheduler, x0, eps, zeros), noised(scheduler, x0, eps, t)
            nats = prior_kl(scheduler, x0) + decoder_nll(scheduler, x0, x_first, unet(x_first, zeros).sample, levels)
            nats = nats + 999 * kl_terms(scheduler, x0, x_t, unet(x_t, t).sample, t)
            values = (-nats / (dim * math.log(2))).numpy()
            plain_means.append(values.mean())
            plain_errors.append(values.std(ddof=1) / math.sqrt(draws))
    plain_means, plain_errors = np.array(plain_means), np.array(plain_errors)
    assert (np.abs(plain_means - reduced.mean) < 4 * np.sqrt(plain_errors**2 + reduced.stderr**2)).all()
    assert (reduced.stderr < 0.5 * plain_errors).all()


# --- config -------------------------------------------------------------------


def _with_measurements(measurements, **changes):
    # Pixel similarity needs a sign for a measurement without a direction.
    return with_changes(default_config(), {"measurements": measurements, "methods.pixel_similarity.sign": 1, "methods.nda.sign": 1, **changes})


def test_every_measurement_type_validates_with_defaults_filled():
    measurements = {
        "loss": {"type": "loss"},
        "loss_t500": {"type": "loss_at_t", "timestep": 500},
        "norm": {"type": "squared_norm"},
        "simplified_elbo": {"type": "simplified_elbo", "draws": 64, "strata": 8, "antithetic": True},
        "elbo": {"type": "elbo", "target_stderr": 0.01, "max_draws": 1024},
        "log_likelihood": {"type": "log_likelihood", "rtol": 0.001, "atol": 0.001, "probes": 2},
    }
    validated = validate_config(_with_measurements(measurements))["measurements"]
    assert list(validated) == list(measurements), "measurement order is the display order"
    for name, entry in validated.items():
        assert list(entry) == sorted(entry)
        assert {k: v for k, v in entry.items() if k not in measurements[name] and k != "levels"} == {
            k: v for k, v in measurement_defaults(entry["type"]).items() if k not in measurements[name]
        }
    assert validated["elbo"]["levels"] == 17 and validated["log_likelihood"]["levels"] == 17
    assert "levels" not in validated["loss"]


@pytest.mark.parametrize(
    "measurements, expected",
    [
        ({"loss": {"draws": 64}}, "measurements.loss: 'type' is a required property"),
        ({"loss": {"type": "los"}}, "measurements.loss.type: 'los' is not one of"),
        ({"loss_t": {"type": "loss_at_t"}}, "measurements.loss_t: 'timestep' is a required property"),
        ({"loss_t": {"type": "loss_at_t", "timestep": 1000}}, "measurements.loss_t.timestep: 1000 is not below"),
        ({"loss_t": {"type": "loss_at_t", "timestep": 5, "strata": 4}}, "('strata' was unexpected)"),
        ({"elbo": {"type": "elbo", "drawz": 3}}, "measurements.elbo: Additional properties are not allowed ('drawz' was unexpected)"),
        ({"elbo": {"type": "elbo", "draws": 100, "strata": 16}}, "measurements.elbo.draws: 100 must be a multiple of strata"),
        ({"elbo": {"type": "elbo", "draws": 16, "strata": 16}}, "at least 2 replicates"),
        ({"elbo": {"type": "elbo", "levels": 256}}, "measurements.elbo.levels: 256 but dataset 'digits' has 17"),
        ({"elbo": {"type": "elbo", "target_stderr": 0.1}}, "measurements.elbo.max_draws: required with target_stderr"),
        ({"elbo": {"type": "elbo", "max_draws": 1024}}, "measurements.elbo.max_draws: only used with target_stderr"),
        ({"ll": {"type": "log_likelihood", "rtol": 0}}, "measurements.ll.rtol: 0 is less than or equal to the minimum"),
        ({"ll": {"type": "log_likelihood", "probe_distribution": "normal"}}, "measurements.ll.probe_distribution: 'normal' is not one of"),
        ({"ll": {"type": "log_likelihood", "atol": "1e-3"}}, "measurements.ll.atol: '1e-3' is a string"),
        ({"bad name": {"type": "loss"}}, "does not match"),
    ],
)
def test_bad_measurement_settings_are_named(measurements, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(_with_measurements(measurements))
    assert expected in str(error.value)


def test_readme_table_states_each_measurement_types_unit_and_orientation():
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].strip("`") in MEASUREMENT_TYPES:
            rows[cells[0].strip("`")] = cells
    assert rows.keys() == MEASUREMENT_TYPES.keys()
    for name, spec in MEASUREMENT_TYPES.items():
        _, _, unit, orientation = rows[name]
        assert unit == spec.unit, name
        assert orientation.strip("*`").startswith((ORIENTATION_TEXT[spec.orientation], spec.orientation)), name
