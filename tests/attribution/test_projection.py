"""Tests for ldsbench.attribution.projection: the chunked, seeded random projector."""

import math

import pytest
import torch

from ldsbench.attribution.projection import PROJECTION_KINDS, RandomProjector, block_seed

KINDS = list(PROJECTION_KINDS)


def _grads(batch: int, num_params: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_params, generator=generator)


def _explicit_matrix(projector: RandomProjector) -> torch.Tensor:
    """The implicit [P, k] matrix, recovered by projecting the identity."""
    return projector.project(torch.eye(projector.num_params))


@pytest.mark.parametrize("kind", KINDS)
def test_output_independent_of_batch_split(kind):
    # P = 1000 is not a multiple of chunk_size, so the ragged last block is covered.
    grads = _grads(10, 1000)
    whole = RandomProjector(1000, 64, seed=3, kind=kind, chunk_size=128).project(grads)
    fresh = RandomProjector(1000, 64, seed=3, kind=kind, chunk_size=128)
    pieces = torch.cat([fresh.project(part) for part in grads.split([3, 5, 1, 1])])
    assert whole.shape == (10, 64) and whole.dtype == torch.float32
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_across_calls_instances_and_cache(kind):
    grads = _grads(4, 500)
    projector = RandomProjector(500, 32, seed=11, kind=kind, chunk_size=100)
    first = projector.project(grads)
    second = projector.project(grads)  # served from the block cache
    uncached = RandomProjector(500, 32, seed=11, kind=kind, chunk_size=100, cache_bytes=0)
    assert torch.equal(first, second)
    assert torch.equal(first, uncached.project(grads))
    # A dense block is rows x dim float32; a sparse one rows x 4 indices and signs.
    expected = 500 * 4 * (8 + 4) if kind == "sparse" else 500 * 32 * 4
    assert uncached._cached_bytes == 0 and projector._cached_bytes == expected


def test_cache_respects_memory_cap():
    # Each block is 100 x 32 float32 = 12800 bytes; a 30000-byte cap holds two.
    projector = RandomProjector(500, 32, seed=0, chunk_size=100, cache_bytes=30000)
    projector.project(_grads(2, 500))
    assert len(projector._cache) == 2
    assert projector._cached_bytes == 2 * 12800


def test_identity_when_dim_is_none():
    grads = _grads(5, 300).double()
    projector = RandomProjector(300, None, seed=0)
    out = projector.project(grads)
    assert out.dtype == torch.float32
    assert projector.output_dim == 300
    assert torch.equal(out, grads.float())


@pytest.mark.parametrize("kind", KINDS)
def test_different_seeds_give_different_matrices(kind):
    a = _explicit_matrix(RandomProjector(300, 16, seed=0, kind=kind, chunk_size=64))
    b = _explicit_matrix(RandomProjector(300, 16, seed=1, kind=kind, chunk_size=64))
    # Independent matrices: entries agree only by chance (half the time for +-1).
    assert (a != b).float().mean() > 0.3
    # Neighbouring chunks of one matrix are not copies of each other either.
    assert not torch.equal(a[:64], a[64:128])


def test_block_seed_is_pure_and_decorrelated():
    assert block_seed(5, 7) == block_seed(5, 7)
    # A naive seed + chunk would collide here.
    assert block_seed(0, 1) != block_seed(1, 0)
    assert 0 <= block_seed(2**70, 3) < 2**63


def test_rademacher_entries_are_scaled_signs():
    dim = 25
    matrix = _explicit_matrix(RandomProjector(400, dim, seed=2, kind="rademacher", chunk_size=64))
    assert matrix.shape == (400, dim)
    torch.testing.assert_close(matrix.abs(), torch.full_like(matrix, 1 / math.sqrt(dim)))
    # Balanced signs: 10000 fair coin flips, mean within 5 standard deviations.
    assert abs(matrix.sign().mean().item()) < 5 / math.sqrt(matrix.numel())


def test_gaussian_entries_have_variance_one_over_dim():
    dim = 50
    matrix = _explicit_matrix(RandomProjector(400, dim, seed=2, kind="gaussian", chunk_size=64))
    scaled = matrix * math.sqrt(dim)  # should be standard normal
    assert abs(scaled.mean().item()) < 5 / math.sqrt(scaled.numel())
    assert abs(scaled.var().item() - 1.0) < 0.05
    assert len(torch.unique(matrix)) > 0.99 * matrix.numel()  # continuous, not +-c


@pytest.mark.parametrize("kind", KINDS)
def test_block_depends_only_on_seed_and_chunk_index(kind):
    # Full blocks are shared by projectors of different sizes with the same seed.
    small = RandomProjector(300, 8, seed=4, kind=kind, chunk_size=128)
    large = RandomProjector(1000, 8, seed=4, kind=kind, chunk_size=128)
    assert torch.equal(small.matrix_block(1), large.matrix_block(1))
    assert small.matrix_block(2).shape == (300 - 256, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_inner_products_preserved_for_large_dim(kind):
    # Johnson-Lindenstrauss: for unit vectors x, y the error of <Rx, Ry> has
    # standard deviation about sqrt((1 + <x,y>^2) / dim) <= 0.016 at dim = 8192.
    vectors = _grads(8, 2000, seed=9)
    vectors = vectors + 0.5 * vectors[:1]  # some correlated pairs, not just near-orthogonal
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    projected = RandomProjector(2000, 8192, seed=1, kind=kind, chunk_size=512).project(vectors)
    exact = vectors @ vectors.T
    approx = projected @ projected.T
    assert (approx - exact).abs().max() < 0.08
    # And the projection is not trivially small: norms are close to 1.
    torch.testing.assert_close(projected.norm(dim=1), torch.ones(8), atol=0.05, rtol=0)


def test_inner_product_error_shrinks_with_dim():
    vectors = _grads(6, 800, seed=5)
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    exact = vectors @ vectors.T
    errors = []
    for dim in (16, 256, 4096):
        err = 0.0
        for seed in range(3):
            projected = RandomProjector(800, dim, seed=seed, chunk_size=256).project(vectors)
            err += (projected @ projected.T - exact).pow(2).mean().sqrt().item()
        errors.append(err / 3)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_output_follows_gradient_dtype_and_device():
    grads = _grads(3, 200).to(torch.float64)
    out = RandomProjector(200, 10, seed=0, chunk_size=64).project(grads)
    assert out.dtype == torch.float32 and out.device == grads.device
    # Casting happens per chunk; the result matches projecting float32 input.
    torch.testing.assert_close(out, RandomProjector(200, 10, seed=0, chunk_size=64).project(grads.float()))


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"num_params": 0}, "0"),
        ({"num_params": 2.5}, "2.5"),
        ({"dim": -3}, "-3"),
        ({"seed": "x"}, "'x'"),
        ({"kind": "sketch"}, "'sketch'"),
        ({"chunk_size": 0}, "0"),
        ({"cache_bytes": -1}, "-1"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, bad):
    arguments = {"num_params": 10, "dim": 4, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))}.*{bad}") as info:
        RandomProjector(**arguments)
    assert bad in str(info.value)


def test_project_rejects_bad_gradients():
    projector = RandomProjector(10, 4, seed=0)
    with pytest.raises(ValueError, match=r"\[3, 11\]"):
        projector.project(torch.zeros(3, 11))
    with pytest.raises(ValueError, match=r"\[10\]"):
        projector.project(torch.zeros(10))
    with pytest.raises(ValueError, match="int64"):
        projector.project(torch.zeros(2, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="chunk"):
        projector.matrix_block(1)


def test_sparse_projection_preserves_inner_products_within_the_jl_bound():
    """Over 30 matrices, projected inner products of two correlated vectors
    scatter around the true one with the dense JL spread
    sqrt((|u|^2 |v|^2 + (u.v)^2) / k); none is beyond 4 of those spreads."""
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(50_000, generator=generator, dtype=torch.float64)
    v = 0.6 * u + torch.randn(50_000, generator=generator, dtype=torch.float64)
    k = 512
    spread = math.sqrt(((u @ u) * (v @ v) + (u @ v) ** 2).item() / k)
    errors = []
    for seed in range(30):
        projected = RandomProjector(50_000, k, seed, kind="sparse", chunk_size=8192).project(torch.stack([u, v]))
        errors.append((projected[0].double() @ projected[1].double() - u @ v).item() / spread)
    errors = torch.tensor(errors)
    assert errors.abs().max() < 4
    assert abs(errors.mean()) < 4 / math.sqrt(30), "unbiased"
    assert 0.5 < errors.std() < 1.5, "the dense projection's spread"


def test_sparse_projection_is_its_matrix_and_does_not_depend_on_batching():
    projector = RandomProjector(20_000, 64, seed=3, kind="sparse", chunk_size=4096)
    grads = torch.randn(5, 20_000)
    together = projector.project(grads)
    apart = torch.cat([projector.project(grads[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, apart)
    dense = torch.cat([projector.matrix_block(c) for c in range(projector.num_chunks)])
    assert ((dense != 0).sum(dim=1) <= 4).all()
    torch.testing.assert_close(together, grads @ dense, rtol=1e-4, atol=1e-4)
