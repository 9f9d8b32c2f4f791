"""Influence scoring within a memory budget: query chunks, reduced-precision
query storage, and a peak that follows ``memory.influence_bytes`` rather
than dampings x queries x parameters."""

import copy

import numpy as np
import pytest
import torch

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.attribution.quantization import INT8_BLOCK, RowStore
from ldsbench.attribution.scoring import query_gradients, training_gradient_batches
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules
from ldsbench.methods.influence import influence_scores
from ldsbench.planning.footprint import _LiveBytes, footprint_of
from ldsbench.planning.memory import GIB, PROCESS_BASE_BYTES, MemoryBudgetError, choose_influence_chunking, influence_bytes, method_sizes, query_store_bytes
from tiny_models import tiny_model_and_images

DAMPINGS = [1e-8, 1e-4, 1e-2, 1.0, 10.0]
DRAWS = dict(measurement="loss", train_draws=2, query_draws=2, seed=0)


@pytest.fixture(scope="module")
def setup():
    unet, scheduler, train, queries = tiny_model_and_images(6, 5)
    model = FlatNoisePredictor(copy.deepcopy(unet)).double()
    data = NoisedTrainingData(train, scheduler, draws_per_example=2, seed=0)
    names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
    basis = fit_kronecker_eigenbasis(model, names, data, CurvatureSettings(kind="ekfac"), num_data=data.num_data, batch_size_fn=batch_size_of)
    return unet, scheduler, train, queries, basis


def test_rotated_scores_equal_the_dense_solve(setup):
    unet, scheduler, train, queries, basis = setup
    scores = influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS)
    q = query_gradients(unet, scheduler, queries, "loss", 2, seed=0, progress=False)
    g = torch.cat([grads for _, grads in training_gradient_batches(unet, scheduler, train, "loss", 2, seed=0, progress=False)]).double()
    for index, damping in enumerate(DAMPINGS):
        expected = -(basis.solve(q, damping) @ g.T) / len(train)
        np.testing.assert_allclose(scores[index], expected.numpy(), rtol=1e-4, atol=1e-9 * np.abs(expected.numpy()).max())


def test_query_chunks_and_small_batches_change_no_score(setup):
    unet, scheduler, train, queries, basis = setup
    whole = influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS)
    sizes = dict(train=len(train), values=len(DAMPINGS), storage="float64", **method_sizes(footprint_of(unet), "influence", 2))
    # A budget that holds two queries' rotated gradients, not five.
    budget = influence_bytes(queries=len(queries), queries_per_chunk=2, batch_examples=4, **sizes)
    plan = choose_influence_chunking(budget, queries=len(queries), batch_examples=4, setting="runtime.memory_gb", **sizes)
    assert plan.queries_per_chunk == 2 and plan.chunks == 3 and plan.peak_bytes <= budget
    chunked = influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS, budget_bytes=budget, batch_examples=4)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-12)


def test_budget_too_small_names_the_setting(setup):
    unet, scheduler, train, queries, basis = setup
    with pytest.raises(MemoryBudgetError, match="runtime.gpu_memory_gb"):
        influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS, budget_bytes=1000, budget_setting="runtime.gpu_memory_gb")


@pytest.mark.parametrize("storage, dampings", [("float32", DAMPINGS), ("bfloat16", DAMPINGS), ("int8", DAMPINGS[:1])])
def test_reduced_storage_keeps_the_scores(setup, storage, dampings):
    """float32 and bfloat16 keep every damping's scores; int8 keeps those at
    the smallest damping, where the stored values are preconditioned (at
    larger dampings its rounding shows: docs/memory-and-scale.md, "Scoring at scale")."""
    unet, scheduler, train, queries, basis = setup
    exact = influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS)
    reduced = influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS, storage=storage)
    for index in range(len(dampings)):
        for q in range(len(queries)):
            assert np.corrcoef(exact[index, q], reduced[index, q])[0, 1] > 0.999


def test_int8_rows_are_within_half_a_step():
    x = torch.randn(7, 1000, dtype=torch.float64) * torch.logspace(-6, 3, 1000, dtype=torch.float64)
    store = RowStore(7, 1000, "int8")
    store.put(slice(0, 7), x)
    padded = torch.nn.functional.pad(x, (0, 24)).reshape(7, -1, INT8_BLOCK)
    step = (padded.abs().amax(dim=2, keepdim=True) / 127).expand_as(padded).reshape(7, -1)[:, :1000]
    assert ((store.read().double() - x).abs() <= step / 2 * (1 + 1e-6)).all()
    zeros = RowStore(1, 3, "int8")
    zeros.put(slice(0, 1), torch.zeros(1, 3))
    assert torch.equal(zeros.read(), torch.zeros(1, 3))


def test_peak_follows_the_formula_not_dampings_times_queries_times_params(setup):
    """Every tensor the scorer allocates is tracked while alive: its peak stays
    within ``influence_bytes`` and below one [L, Q, P] float64 array."""
    unet, scheduler, train, queries, basis = setup
    sizes = method_sizes(footprint_of(unet), "influence", 2)
    mode = _LiveBytes()
    with mode:
        influence_scores(unet, scheduler, train, queries, basis, DAMPINGS, **DRAWS, batch_examples=2)
    formula = influence_bytes(
        queries=len(queries), queries_per_chunk=len(queries), batch_examples=2, train=len(train), values=len(DAMPINGS), storage="float64", **sizes
    )
    dense = len(DAMPINGS) * len(queries) * sizes["params"] * 8
    assert mode.peak <= formula - PROCESS_BASE_BYTES  # the tracker sees tensors, not the process
    assert mode.peak < dense


def test_paper_scale_plan_fits_an_80_gb_gpu():
    """The CIFAR-2 preset's sizes (P = 38.2M, Q = 1000, N = 5000, 5 dampings):
    int8 query storage holds every query at once, float32 needs chunks."""
    sizes = dict(
        params=38_247_168,
        largest_module=1_179_648,
        modules=113,
        curvature_values=392_086_242 + 38_247_168,
        model_params=38_306_691,
        activation_bytes_per_draw=102_157_576,
        draws_per_pass=64,
    )
    common = dict(queries=1000, batch_examples=32, setting="runtime.gpu_memory_gb", train=5000, values=5, **sizes)
    int8 = choose_influence_chunking(80 * GIB, storage="int8", **common)
    assert int8.chunks == 1 and int8.peak_bytes <= 80 * GIB
    fp32 = choose_influence_chunking(80 * GIB, storage="float32", **common)
    assert fp32.chunks >= 2 and fp32.peak_bytes <= 80 * GIB
    assert query_store_bytes(1000, sizes["params"], "float32") > 80 * GIB
