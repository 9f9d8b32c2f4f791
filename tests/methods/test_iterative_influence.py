"""Exact-GGN influence (``methods.iterative_influence``) against exact answers.

On the linear denoiser (``tests/helpers/linear_denoiser.py``) the GGN of the
mean-MSE loss over the curvature fit's draws is exactly ``I_D (x) K`` with
K = (2 / (n D)) sum z z^T over those draws, so

* with a Monte Carlo EK-FAC (not equal to G) as preconditioner, the
  iterative scores equal the dense solve with the exact GGN to the solver's
  tolerance;
* with the type-2 EK-FAC (equal to G, as the GGN is Kronecker-factored)
  the scores are EK-FAC ``influence``'s, and PCG started at EK-FAC's solution
  needs no iteration (from zero: one);
* ``max_iterations: 0`` is EK-FAC influence exactly.

On the tiny UNet, where the GGN is not Kronecker-factored, a few modules'
scores equal the dense solve with the GGN built column by column.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import linear_denoiser as ld
from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbases
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.attribution.iterative_solvers import block_pcg
from ldsbench.attribution.scoring import SCORE_SIGN, query_gradients, training_gradient_batches
from ldsbench.data.image_sets import load_digits_split
from ldsbench.diffusion.model import FlatNoisePredictor, build_scheduler
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.methods.influence import stacked_influence_scores
from ldsbench.methods.iterative_influence import exact_ggn, ggn_training_images, stacked_iterative_influence_scores
from tiny_models import tiny_model_and_images

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN, N_QUERIES = 64, 3
DRAWS = 4  # curvature draws per example: n = 256 GGN data points for Z = 131 features
TRAIN_DRAWS, QUERY_DRAWS = 4, 8
SEED = 0
MODULE = "unet.linear"
CURVATURE = {"kind": "ekfac", "draws_per_example": DRAWS, "seed": 0, "dtype": "float64"}
DAMPINGS = [1e-4, 1e-2]


@pytest.fixture(scope="module")
def problem():
    scheduler = build_scheduler({})
    abar = scheduler.alphas_cumprod.double()
    train, heldout = load_digits_split(N_TRAIN, N_QUERIES, seed=SEED)
    images = torch.from_numpy(train.images).double()
    queries = torch.from_numpy(heldout.images).double()
    shape = tuple(images.shape[1:])
    generator = torch.Generator().manual_seed(0)
    # Any weights: the GGN of a linear model does not depend on them, gradients do.
    weight = 0.05 * torch.randn(int(np.prod(shape)), ld.num_features(int(np.prod(shape))), dtype=torch.float64, generator=generator)
    denoiser = ld.LinearDenoiser(abar, shape, weight)
    data = NoisedTrainingData(images, scheduler, DRAWS, CURVATURE["seed"], batch_size=64, dtype=torch.float64)
    # The exact GGN over the fit's draws: I_D (x) K.
    num_pixels = int(np.prod(shape))
    z = torch.cat([ld.features(inputs["sample"], inputs["timestep"], abar) for inputs, _ in data])
    factor = 2.0 / (data.num_data * num_pixels) * z.T @ z
    bases = {}
    for fisher in ("mc", "type-2"):
        settings = CurvatureSettings(kind="ekfac", fisher_type=fisher, seed=CURVATURE["seed"])
        bases[fisher] = fit_kronecker_eigenbases(FlatNoisePredictor(denoiser), [MODULE], data, settings, num_data=data.num_data, batch_size_fn=batch_size_of)[
            "ekfac"
        ]
    train_grads = torch.cat([g for _, g in training_gradient_batches(denoiser, scheduler, images, "loss", TRAIN_DRAWS, SEED, progress=False)])
    query_grads = query_gradients(denoiser, scheduler, queries, "loss", QUERY_DRAWS, SEED, progress=False)
    return SimpleNamespace(
        scheduler=scheduler,
        images=images,
        queries=queries,
        denoiser=denoiser,
        factor=factor,
        bases=bases,
        num_pixels=num_pixels,
        train_grads=train_grads,
        query_grads=query_grads,
    )


def iterative(p, basis, **settings):
    options = dict(
        query_fns=[measurement_output_fn("loss")],
        curvature=CURVATURE,
        ggn_examples=None,
        max_iterations=100,
        tolerance=1e-11,
        train_draws=TRAIN_DRAWS,
        query_draws=QUERY_DRAWS,
        seed=SEED,
    )
    options.update(settings)
    return stacked_iterative_influence_scores(p.denoiser, p.scheduler, p.images, p.queries, basis, DAMPINGS, **options)


def dense_scores(p, damping):
    shape = (-1, p.num_pixels, p.factor.shape[0])
    return ld.influence_scores(p.query_grads.reshape(shape), p.train_grads.reshape(shape), p.factor, damping).numpy()


def test_exact_ggn_is_the_closed_form_of_the_fit_data(problem):
    p = problem
    ggn = exact_ggn(p.denoiser, p.scheduler, p.images, [MODULE], CURVATURE, ggn_examples=None, draws_per_pass=64)
    vectors = torch.randn(ggn.num_params, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = torch.stack([(v.reshape(p.num_pixels, -1) @ p.factor).reshape(-1) for v in vectors.T], dim=1)
    torch.testing.assert_close(ggn(vectors), expected, rtol=1e-10, atol=1e-14)
    # The GGN is Kronecker-factored, so the type-2 EK-FAC is it; the Monte Carlo one is not.
    solved = p.bases["type-2"].solve(expected.T, 0.0).T
    torch.testing.assert_close(solved, vectors, rtol=1e-6, atol=1e-8)
    assert (p.bases["mc"].solve(expected.T, 0.0).T - vectors).norm() > 1e-2 * vectors.norm()


def test_scores_equal_the_dense_solve_with_the_exact_ggn(problem):
    p = problem
    scores = iterative(p, p.bases["mc"])
    assert scores.shape == (len(DAMPINGS), N_QUERIES, N_TRAIN) and scores.dtype == np.float32
    for index, damping in enumerate(DAMPINGS):
        expected = dense_scores(p, damping)
        # Observed relative error about 1e-7 (float32 scores).
        np.testing.assert_allclose(scores[index], expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # EK-FAC influence with the Monte Carlo EK-FAC is measurably different: the test is not vacuous.
    ekfac = iterative(p, p.bases["mc"], max_iterations=0)
    assert np.abs(ekfac[0] - dense_scores(p, DAMPINGS[0])).max() > 1e-3 * np.abs(ekfac[0]).max()


def test_no_iteration_is_ekfac_influence(problem):
    p = problem
    common = dict(query_fns=[measurement_output_fn("loss")], train_draws=TRAIN_DRAWS, query_draws=QUERY_DRAWS, seed=SEED)
    influence = stacked_influence_scores(p.denoiser, p.scheduler, p.images, p.queries, p.bases["mc"], DAMPINGS, **common)
    np.testing.assert_allclose(iterative(p, p.bases["mc"], max_iterations=0), influence, rtol=1e-5, atol=1e-7 * np.abs(influence).max())


def test_kronecker_ggn_gives_ekfac_influence_without_iterations(problem):
    p = problem
    basis = p.bases["type-2"]
    common = dict(query_fns=[measurement_output_fn("loss")], train_draws=TRAIN_DRAWS, query_draws=QUERY_DRAWS, seed=SEED)
    influence = stacked_influence_scores(p.denoiser, p.scheduler, p.images, p.queries, basis, DAMPINGS, **common)
    scores = iterative(p, basis, tolerance=1e-8)
    np.testing.assert_allclose(scores, influence, rtol=1e-5, atol=1e-6 * np.abs(influence).max())
    # PCG preconditioned by the exact EK-FAC: no iteration from EK-FAC's solution, one from zero.
    ggn = exact_ggn(p.denoiser, p.scheduler, p.images, [MODULE], CURVATURE, ggn_examples=None, draws_per_pass=64)
    rhs = p.query_grads.T.contiguous()
    for damping in DAMPINGS:

        def precondition(residuals, damping=damping):
            return basis.solve(residuals.T, damping).T

        def damped(vectors, damping=damping):
            return ggn(vectors) + damping * vectors

        _, started = block_pcg(damped, rhs, precondition, tolerance=1e-8, max_iterations=5, start=precondition(rhs))
        _, from_zero = block_pcg(damped, rhs, precondition, tolerance=1e-8, max_iterations=5)
        assert (started.iterations, from_zero.iterations) == (0, 1) and started.converged and from_zero.converged


def test_ggn_examples_are_chosen_by_content_not_by_row():
    images = torch.arange(10, dtype=torch.float64).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    chosen = ggn_training_images(images, 4)
    reordered = ggn_training_images(images.flip(0), 4)
    assert len(chosen) == 4 and sorted(chosen.flatten().tolist()) == sorted(reordered.flatten().tolist())
    assert ggn_training_images(images, None) is images and ggn_training_images(images, 20) is images


def test_unet_scores_equal_the_dense_solve_with_a_non_kronecker_ggn():
    unet, scheduler, train, queries = tiny_model_and_images(n_train=4, n_queries=2)
    unet = unet.double()
    pattern = "^(conv_in|conv_out)$"  # 72 + 72 weights: G is dense across the two modules
    curvature = {"kind": "ekfac", "draws_per_example": 2, "seed": 0, "dtype": "float64"}
    data = NoisedTrainingData(train, scheduler, 2, 0, batch_size=8, dtype=torch.float64)
    names = ["unet.conv_in", "unet.conv_out"]
    basis = fit_kronecker_eigenbases(
        FlatNoisePredictor(copy.deepcopy(unet)), names, data, CurvatureSettings(kind="ekfac"), num_data=data.num_data, batch_size_fn=batch_size_of
    )["ekfac"]
    ggn = exact_ggn(unet, scheduler, train.double(), names, curvature, ggn_examples=None, draws_per_pass=8)
    dense = ggn(torch.eye(ggn.num_params, dtype=torch.float64))
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-14)
    damping = 1e-2 * dense.diagonal().mean().item()
    settings = dict(train_draws=2, query_draws=2, seed=SEED)
    scores = stacked_iterative_influence_scores(
        unet,
        scheduler,
        train.double(),
        queries.double(),
        basis,
        [damping],
        query_fns=[measurement_output_fn("loss")],
        curvature=curvature,
        ggn_examples=None,
        max_iterations=200,
        tolerance=1e-9,
        modules=pattern,
        **settings,
    )
    query = query_gradients(unet, scheduler, queries.double(), "loss", 2, SEED, progress=False)
    train_grads = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, train.double(), "loss", 2, SEED, progress=False)])
    columns = torch.cat([torch.arange(c.start, c.stop) for name, c in basis.module_slices() if name in names])
    solved = torch.linalg.solve(dense + damping * torch.eye(len(dense), dtype=torch.float64), query[:, columns].T)
    expected = (SCORE_SIGN * solved.T @ train_grads[:, columns].T / len(train)).numpy()
    np.testing.assert_allclose(scores[0], expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_plan_row_follows_the_memory_and_passes_formulas():
    from ldsbench.planning.footprint import model_footprint
    from ldsbench.planning.memory import ggn_batch_draws, iterative_influence_bytes, method_sizes
    from ldsbench.planning.plan import scoring_estimate
    from ldsbench.spec.config import validate_config
    from ldsbench.spec.measurement_types import measurement_gradient_settings, query_output_groups
    from workflow_api import tiny_config

    config = validate_config(tiny_config())
    footprint = model_footprint(config["model"]["unet"])
    method = config["methods"]["iterative_influence"]
    n_train = config["dataset"]["n_train"]
    groups = len(query_output_groups({name: measurement_gradient_settings(m) for name, m in config["measurements"].items()}))
    rows = groups * (config["queries"]["generated"] + config["queries"]["heldout"])
    values = 1 + len(method["damping_grid"])
    ggn_draws = method["ggn_examples"] * method["curvature"]["draws_per_example"]

    def passes(chunks):
        ggn = values * (method["max_iterations"] + 1) * ggn_draws * (chunks + 2 * rows)
        return chunks * n_train * method["train_draws"] + rows * method["query_draws"] + ggn

    roomy = scoring_estimate(method, config, footprint, 64 * 2**30, "runtime.memory_gb")
    assert roomy.passes == passes(1)
    # A budget between one right-hand side and all of them: chunks, within it.
    per_pass = min(config["runtime"]["gradient_draws_per_pass"], max(method["train_draws"], method["query_draws"]))
    sizes = dict(
        queries=rows,
        train=n_train,
        values=values,
        batch_examples=min(32, n_train),
        ggn_draws=ggn_batch_draws(config["runtime"]["gradient_draws_per_pass"], method["curvature"]["draws_per_example"]),
        **method_sizes(footprint, "influence", per_pass),
    )
    one, every = iterative_influence_bytes(queries_per_chunk=1, **sizes), iterative_influence_bytes(queries_per_chunk=rows, **sizes)
    assert every - one == (values + 6) * (rows - 1) * footprint.attributed_weights * 8 + 3 * (rows - 1) * footprint.largest_module * 8
    tight = scoring_estimate(method, config, footprint, (one + every) // 2, "runtime.memory_gb")
    assert tight.peak_bytes <= (one + every) // 2 and tight.passes == passes(2)
