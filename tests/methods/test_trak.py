"""Tests for ldsbench.methods.trak: kernel scores q^T (Phi^T Phi + lambda I)^{-1} phi_i."""

import pytest
import torch

from ldsbench.attribution.projection import RandomProjector
from ldsbench.attribution.ridge import GramSpectrum, accumulate_gram
from ldsbench.methods.trak import trak_kernel_scores
from tiny_models import tiny_model_and_images


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _dense_scores(query: torch.Tensor, train: torch.Tensor, lam: float) -> torch.Tensor:
    """Reference [Q, N]: one dense float64 solve of the ridge system."""
    query, train = query.double(), train.double()
    k = train.shape[1]
    system = train.T @ train + lam * torch.eye(k, dtype=torch.float64)
    return query @ torch.linalg.solve(system, train.T)


def _pinv_scores(query: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Reference [Q, N] at lambda = 0 with the Moore-Penrose pseudo-inverse."""
    return query @ torch.linalg.pinv(train.T @ train, hermitian=True, rtol=1e-10) @ train.T


def test_small_lambda_matches_exact_solve():
    query, train = _randn(5, 8, seed=0), _randn(40, 8, seed=1)  # N > k, full rank
    scores = trak_kernel_scores(query, train, [1e-10])
    assert scores.shape == (1, 5, 40) and scores.dtype == torch.float64
    torch.testing.assert_close(scores[0], _dense_scores(query, train, 1e-10), rtol=1e-9, atol=1e-12)
    # lambda = 0 on a full-rank Gram matrix is the plain inverse.
    torch.testing.assert_close(
        trak_kernel_scores(query, train, [0.0])[0],
        _dense_scores(query, train, 0.0),
        rtol=1e-9,
        atol=1e-12,
    )


def test_float32_inputs_are_scored_in_float64():
    query, train = _randn(3, 6, seed=2).float(), _randn(30, 6, seed=3).float()
    scores = trak_kernel_scores(query, train, [0.5])
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores[0], _dense_scores(query, train, 0.5), rtol=1e-10, atol=1e-12)


def test_many_lambdas_match_separate_dense_solves():
    query, train = _randn(4, 10, seed=4), _randn(50, 10, seed=5)
    lambdas = [0.0, 1e-3, 0.5, 10.0, 1e4]
    scores = trak_kernel_scores(query, train, lambdas)
    assert scores.shape == (len(lambdas), 4, 50)
    for l, lam in enumerate(lambdas):
        torch.testing.assert_close(scores[l], _dense_scores(query, train, lam), rtol=1e-9, atol=1e-12)
    # Lambda is absolute on the summed Gram matrix: a huge lambda shrinks scores to q.phi / lambda.
    torch.testing.assert_close(scores[-1] * 1e4, query @ train.T, rtol=0.05, atol=0.05)


def test_more_features_than_examples_uses_exact_low_rank_formula():
    # k > N: Phi^T Phi is singular, the SVD path must still be exact for lambda > 0.
    query, train = _randn(3, 30, seed=6), _randn(7, 30, seed=7)
    lambdas = [0.0, 0.1, 1.0, 25.0]
    scores = trak_kernel_scores(query, train, lambdas)
    assert scores.shape == (4, 3, 7)
    for l, lam in enumerate(lambdas[1:], start=1):
        torch.testing.assert_close(scores[l], _dense_scores(query, train, lam), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(scores[0], _pinv_scores(query, train), rtol=1e-8, atol=1e-10)
    # The eigen path on the accumulated Gram matrix agrees with the SVD path.
    via_gram = GramSpectrum.from_gram(accumulate_gram([train])).kernel_scores(query, train, lambdas)
    torch.testing.assert_close(via_gram, scores, rtol=1e-7, atol=1e-9)


def test_lambda_zero_on_rank_deficient_gram_uses_pseudo_inverse():
    # N > k but only rank 4: two features are linear combinations of others.
    base = _randn(30, 4, seed=8)
    train = torch.cat([base, base[:, :2] + base[:, 2:], 2 * base[:, :1]], dim=1)  # [30, 7]
    query = _randn(3, 7, seed=9)
    scores = trak_kernel_scores(query, train, [0.0])
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores[0], _pinv_scores(query, train), rtol=1e-8, atol=1e-10)
    # The pseudo-inverse is the lambda -> 0 limit for queries in the row space of Phi.
    in_span = _randn(3, 30, seed=10) @ train
    torch.testing.assert_close(
        trak_kernel_scores(in_span, train, [0.0])[0],
        _dense_scores(in_span, train, 1e-7),
        rtol=1e-5,
        atol=1e-6,
    )


def test_scores_converge_to_unprojected_with_projection_dim():
    num_params, n_train = 32, 120
    train, query = _randn(n_train, num_params, seed=13), _randn(5, num_params, seed=14)
    gram = train.T @ train
    lam = 0.1 * gram.trace().item() / num_params  # well conditioned, nonzero ridge
    exact = trak_kernel_scores(query, train, [lam])[0]
    errors = []
    for dim in (8, 128, 2048, 16384):
        err = 0.0
        for seed in range(3):  # average seeds so one lucky draw cannot break monotonicity
            projector = RandomProjector(num_params, dim, seed=seed, chunk_size=16)
            projected = trak_kernel_scores(projector.project(query.float()), projector.project(train.float()), [lam])[0]
            err += ((projected - exact).norm() / exact.norm()).item()
        errors.append(err / 3)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.02, errors


def test_projection_to_at_least_num_params_is_exact_at_lambda_zero():
    # With dim >= P the projection R has full row rank and, at lambda -> 0, the
    # kernel on training queries is the same projection onto the column space of Phi.
    num_params = 10
    train = _randn(40, num_params, seed=15)
    query = _randn(3, 40, seed=16) @ train  # in the row space of Phi
    projector = RandomProjector(num_params, 24, seed=0, kind="gaussian")
    project = lambda x: projector.project(x.float()).double()  # noqa: E731
    torch.testing.assert_close(
        trak_kernel_scores(project(query), project(train), [0.0]),
        trak_kernel_scores(query.float().double(), train.float().double(), [0.0]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_permutation_equivariance():
    query, train = _randn(6, 9, seed=17), _randn(35, 9, seed=18)
    lambdas = [0.0, 0.3, 5.0]
    scores = trak_kernel_scores(query, train, lambdas)
    train_perm = torch.randperm(35, generator=torch.Generator().manual_seed(0))
    query_perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    permuted = trak_kernel_scores(query[query_perm], train[train_perm], lambdas)
    torch.testing.assert_close(permuted, scores[:, query_perm][:, :, train_perm], rtol=1e-9, atol=1e-12)


def test_raw_scores_are_not_sign_flipped():
    # phi_i^T (G + lambda I)^{-1} phi_i > 0: self-influence must come back positive.
    train = _randn(20, 5, seed=19)
    scores = trak_kernel_scores(train, train, [0.0, 1.0])
    assert (torch.diagonal(scores, dim1=1, dim2=2) > 0).all()
    # Negating a query negates its scores, with nothing clipped or reoriented.
    torch.testing.assert_close(trak_kernel_scores(-train[:2], train, [1.0]), -scores[1:, :2])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((_randn(2, 3, seed=0), _randn(5, 3, seed=1), [-1.0]), "-1.0"),
        ((_randn(2, 3, seed=0), _randn(5, 3, seed=1), [float("nan")]), "nan"),
        ((_randn(2, 3, seed=0), _randn(5, 3, seed=1), []), "empty"),
        ((_randn(2, 3, seed=0), _randn(5, 3, seed=1), 0.1), "0.1"),
        ((_randn(2, 4, seed=0), _randn(5, 3, seed=1), [1.0]), "4 features"),
        ((_randn(2, 3, seed=0), _randn(5, seed=1), [1.0]), r"\[5\]"),
    ],
)
def test_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        trak_kernel_scores(*args)


@pytest.mark.parametrize("output_fn", ["mean", "l1_norm", "l2_norm", "linf_norm", "elbo_weighted"])
def test_dtrak_output_function_ablations_score(output_fn):
    import numpy as np

    from ldsbench.methods.trak import trak_scores

    unet, scheduler, train, queries = tiny_model_and_images()
    scores = trak_scores(
        unet,
        scheduler,
        train,
        queries,
        [0.1],
        measurement="loss",
        output_fn=output_fn,
        projection_dim=64,
        projection_seed=0,
        train_draws=4,
        query_draws=4,
        seed=0,
    )
    assert scores.shape == (1, 2, 4) and np.isfinite(scores).all() and np.abs(scores).max() > 0


def test_mean_eigenvalue_scale_multiplies_every_lambda_by_the_trace_over_k():
    # k > N (thin SVD) and k <= N (Gram matrix): the unit is trace(Phi^T Phi) / k either way.
    generator = torch.Generator().manual_seed(5)
    for n, k in [(6, 10), (12, 4)]:
        train = torch.randn(n, k, generator=generator, dtype=torch.float64)
        queries = torch.randn(3, k, generator=generator, dtype=torch.float64)
        unit = float((train * train).sum()) / k
        assert GramSpectrum.from_features(train).mean_eigenvalue == pytest.approx(unit)
        relative = trak_kernel_scores(queries, train, [1e-3, 0.1, 10.0], lambda_scale="mean_eigenvalue")
        absolute = trak_kernel_scores(queries, train, [1e-3 * unit, 0.1 * unit, 10.0 * unit])
        torch.testing.assert_close(relative, absolute)
        # Rescaling the features rescales the spectrum: relative lambdas give the same ranking of examples.
        rescaled = trak_kernel_scores(queries * 7.0, train * 7.0, [0.1], lambda_scale="mean_eigenvalue")
        torch.testing.assert_close(rescaled, relative[1:2])
    with pytest.raises(ValueError, match="lambda_scale"):
        trak_kernel_scores(queries, train, [0.1], lambda_scale="relative")
