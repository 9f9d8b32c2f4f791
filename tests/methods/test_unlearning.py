"""Attribution by unlearning (``methods.unlearning``) against exact answers
on the tiny UNet in float64: the diagonal Fisher is the mean of squared
single-draw gradients; in the small-step limit the score is its first-order
closed form SCORE_SIGN (1/N) g_q^T (F + lam)^{-1} g_i, for a lower- and a
higher-is-better measurement; with an identity curvature it is influence's
formula with the same query gradients; the model's weights are restored
after every query and after scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldsbench.attribution.gradients import example_gradient
from ldsbench.attribution.scoring import SCORE_SIGN, query_gradients
from ldsbench.diffusion.model import attributed_parameters
from ldsbench.diffusion.noise import GradientDraws, content_key
from ldsbench.diffusion.outputs import per_draw_output
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.methods.unlearning import diagonal_fisher, preconditioner, score_unlearning, unlearning_scores
from ldsbench.planning.footprint import model_footprint
from ldsbench.planning.memory import GIB, method_sizes, unlearning_bytes
from ldsbench.planning.plan import rule_estimates
from ldsbench.spec.config import validate_config
from ldsbench.spec.method_types import ScoringJob, scored_values
from tiny_models import tiny_model_and_images
from workflow_api import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

FISHER = GradientDraws(3)
QUERY = GradientDraws(4)
EVAL = GradientDraws(4, timesteps="evenly_spaced")
MEASUREMENTS = {"loss": {"type": "loss"}, "elbo": {"type": "elbo", "levels": 256}}


def _model(n_train=4, n_queries=2):
    unet, scheduler, train, queries = tiny_model_and_images(n_train, n_queries)
    return unet.double(), scheduler, train.double(), queries.double()


def _flat_grad(value, unet):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, attributed_parameters(unet))])


def _scores(unet, scheduler, train, queries, lr, *, measurements=("loss",), dampings=(0.0,), fisher=None, steps=1):
    return unlearning_scores(
        unet,
        scheduler,
        train,
        queries,
        list(dampings),
        measurements=[MEASUREMENTS[m] for m in measurements],
        lr=lr,
        steps=steps,
        fisher_draws=FISHER,
        query_draws=QUERY,
        eval_draws=EVAL,
        seed=0,
        fisher=fisher,
    ).astype(np.float64)


def _first_order(unet, scheduler, train, queries, measurement, inverse):
    """SCORE_SIGN (1/N) g_q^T inverse g_i [Q, N]: g_q the measurement's query
    gradient (influence's, ``scoring.query_gradients``), g_i the gradient of
    the training loss at the evaluation draws."""
    g_q = query_gradients(unet, scheduler, queries, measurement_output_fn(measurement), QUERY, 0, progress=False)
    stream = EVAL.stream(0, "unlearning_eval", "loss")
    g_i = torch.stack([example_gradient(unet, scheduler, image, content_key(image), "loss", EVAL, stream) for image in train])
    return (SCORE_SIGN / len(train) * (g_q * inverse) @ g_i.T).numpy()


def test_fisher_is_the_mean_of_squared_single_draw_gradients():
    unet, scheduler, train, _ = _model()
    fisher = diagonal_fisher(unet, scheduler, train, FISHER, 0)
    stream = FISHER.stream(0, "unlearning_fisher", "loss")
    expected = 0
    for image in train:
        for d in range(FISHER.count):
            timesteps, noise = FISHER.draws(stream, content_key(image), d, 1, tuple(image.shape), 1000)
            value = per_draw_output(unet, scheduler, image[None], noise.double(), timesteps, "loss").sum()
            expected = expected + _flat_grad(value, unet).square()
    expected = expected / (len(train) * FISHER.count)
    np.testing.assert_allclose(fisher.numpy(), expected.numpy(), rtol=1e-10, atol=1e-14 * float(expected.max()))
    # Squared single-draw gradients, not the square of their mean: larger.
    mean_gradient = torch.stack([example_gradient(unet, scheduler, image, content_key(image), "loss", FISHER, stream) for image in train])
    assert (fisher.sum() > mean_gradient.square().mean(dim=0).sum() * 1.5).item()


@pytest.mark.parametrize("measurement", ["loss", "elbo"])
def test_small_steps_approach_the_first_order_closed_form(measurement):
    """One step theta + s (lr / N) (F + lam)^{-1} g_q; Delta_i / lr -> s (1/N) g_i^T (F + lam)^{-1} g_q,
    so tau -> SCORE_SIGN (1/N) g_q^T (F + lam)^{-1} g_i whatever the orientation s."""
    unet, scheduler, train, queries = _model()
    fisher = diagonal_fisher(unet, scheduler, train, FISHER, 0)
    damping = 1e-3 * float(fisher.mean())
    expected = _first_order(unet, scheduler, train, queries, MEASUREMENTS[measurement], preconditioner(fisher, damping))
    errors = []
    # The elbo's gradient (bits per dimension) is larger: a smaller step.
    first = {"loss": 1e-6, "elbo": 1e-8}[measurement]
    for lr in (first, first / 10):
        scores = _scores(unet, scheduler, train, queries, lr, measurements=(measurement,), dampings=(damping,), fisher=fisher)[0]
        errors.append(np.abs(scores - expected).max() / np.abs(expected).max())
    # First order: the error shrinks with the step, by about its ratio.
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 5, errors


def test_identity_curvature_gives_influence_and_its_sign():
    """With F = I, the small-step score is influence's formula with the same
    query gradients; the own example of a training image used as a query is negative."""
    unet, scheduler, train, _ = _model()
    queries = torch.cat([train[:1], _model(4, 1)[3]])
    identity = torch.ones(sum(p.numel() for p in attributed_parameters(unet)), dtype=torch.float64)
    expected = _first_order(unet, scheduler, train, queries, MEASUREMENTS["loss"], identity)
    scores = _scores(unet, scheduler, train, queries, 1e-6, fisher=identity)[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    assert np.corrcoef(scores.ravel(), expected.ravel())[0, 1] > 0.999
    assert scores[0, 0] < 0


def test_every_query_starts_from_the_original_weights():
    """A query's scores do not depend on the queries unlearned before it,
    for every damping and several steps."""
    unet, scheduler, train, queries = _model(4, 3)
    fisher = diagonal_fisher(unet, scheduler, train, FISHER, 0)
    together = _scores(unet, scheduler, train, queries, 0.01, dampings=(0.0, 1e-3), fisher=fisher, steps=2)
    alone = _scores(unet, scheduler, train, queries[2:], 0.01, dampings=(0.0, 1e-3), fisher=fisher, steps=2)
    np.testing.assert_array_equal(together[:, 2:], alone)


def test_scoring_leaves_the_model_unchanged():
    unet, scheduler, train, queries = tiny_model_and_images(4, 2)
    before = {name: value.clone() for name, value in unet.state_dict().items()}
    method = {
        "type": "unlearning",
        "damping": 0.0,
        "damping_grid": [1e-4],
        "lr": 0.01,
        "steps": 1,
        "fisher_draws": 2,
        "query_draws": 2,
        "eval_draws": 2,
        "gradient_draws": None,
        "seed": 0,
        "modules": "^up_blocks",
        "dtype": "float64",
    }
    job = ScoringJob(unet, scheduler, train, queries, method, dict(MEASUREMENTS), budget_bytes=2**32)
    values, scores = score_unlearning(job)
    assert values == scored_values(method) == [0.0, 1e-4]
    for name, value in unet.state_dict().items():
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name
    for name, array in scores.items():
        assert array.shape == (2, 2, 4) and array.dtype == np.float32 and np.isfinite(array).all(), name


def test_the_plan_counts_the_fisher_the_reference_and_each_unlearning():
    """N D_F + S Q (D_Q + L (K - 1) D_Q) forward and backward passes of one
    draw, and N D_E (1 + S Q L) forward passes."""
    config = validate_config(tiny_config())
    method = config["methods"]["unlearning"]
    footprint = model_footprint(config["model"]["unet"])
    rows = {row.rule: row for row in rule_estimates(config, footprint, 64 * GIB, "runtime.memory_gb")}
    row = rows["score_method[unlearning]"]
    n_train, n_queries = config["dataset"]["n_train"], config["queries"]["generated"] + config["queries"]["heldout"]
    groups, values = 2, 1 + len(method["damping_grid"])  # loss and elbo
    evaluation = n_train * method["eval_draws"]
    per_query = method["query_draws"] + values * (method["steps"] - 1) * method["query_draws"]
    assert row.passes == n_train * method["fisher_draws"] + groups * n_queries * per_query
    assert row.forward_passes == evaluation * (1 + groups * n_queries * values)
    sizes = dict(method_sizes(footprint, "unlearning", 8), batch_draws=256, queries=groups * n_queries, train=n_train, values=values)
    assert row.peak_bytes == unlearning_bytes(value_bytes=8, **sizes) > unlearning_bytes(value_bytes=4, **sizes)
