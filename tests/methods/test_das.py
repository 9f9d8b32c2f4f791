"""DAS (ldsbench.methods.das) against brute force on a tiny UNet: full output
Jacobians from torch.autograd.functional.jacobian, dense solves in sample
space, and the README's influence formula with the exact GGN."""

import math

import numpy as np
import pytest
import torch

from ldsbench.attribution.jacobians import draw_directions, jacobian_row_chunks, output_vjps
from ldsbench.diffusion.model import attributed_modules, attributed_parameters
from ldsbench.diffusion.noise import content_key, noise_draws
from ldsbench.diffusion.outputs import MeanOutput, noised, per_draw_output
from ldsbench.methods.das import FORMS, OUTPUTS, das_scores, query_stream, train_stream
from tiny_models import tiny_model_and_images

SEED = 3
TRAIN_DRAWS, QUERY_DRAWS = 2, 3


@pytest.fixture(scope="module")
def setup(one_thread):
    unet, scheduler, train, queries = tiny_model_and_images()
    return unet, scheduler, train, queries


def _draws(scheduler, image, stream, n):
    return noise_draws(stream, content_key(image), 0, n, tuple(image.shape), scheduler.config.num_train_timesteps)


def _jacobian(unet, scheduler, image, timestep, noise):
    """(eps_theta(x_t, t) [D], d eps_theta / d theta [D, P]) for one draw, by brute force."""
    names = [f"{name}.weight" for name, _ in attributed_modules(unet)]
    params = attributed_parameters(unet)
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    x_t = noised(scheduler, image.unsqueeze(0), noise.unsqueeze(0), timestep.view(1))

    def predicted(w):
        weights, offset = {}, 0
        for name, p in zip(names, params):
            weights[name] = w[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return torch.func.functional_call(unet, weights, (x_t, timestep.view(1))).sample.reshape(-1)

    with torch.no_grad():
        eps = predicted(flat)
    return eps, torch.autograd.functional.jacobian(predicted, flat, vectorize=True)


def _example_jacobians(unet, scheduler, image, stream, n):
    """[(eps_theta [D], J [D, P], noise [D])] for the first n draws of image."""
    timesteps, noise = _draws(scheduler, image, stream, n)
    return [(*_jacobian(unet, scheduler, image, timesteps[d], noise[d]), noise[d].reshape(-1)) for d in range(n)]


def _output_gradient(unet, scheduler, image, output_fn, stream, n):
    """[P] gradient of the draw-averaged output function, by plain autograd."""
    timesteps, noise = _draws(scheduler, image, stream, n)
    value = per_draw_output(unet, scheduler, image.unsqueeze(0).expand(n, *image.shape), noise, timesteps, output_fn).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, attributed_parameters(unet))]).double()


def _ridge(rows, rhs, lam):
    """(rows^T rows + lam I)^{-1} rhs^T, transposed, in sample space (Woodbury): rows [R, P], rhs [N, P]."""
    inner = rows @ rows.T + lam * torch.eye(len(rows), dtype=rows.dtype)
    return (rhs - (rows.T @ torch.linalg.solve(inner, rows @ rhs.T)).T) / lam


@pytest.fixture(scope="module")
def brute_force(setup):
    """Exact Jacobians of every training draw and query draw (the method's draws)."""
    unet, scheduler, train, queries = setup
    train_jac = [_example_jacobians(unet, scheduler, image, train_stream(SEED), TRAIN_DRAWS) for image in train]
    query_jac = [_example_jacobians(unet, scheduler, image, query_stream(SEED, "jacobian"), QUERY_DRAWS) for image in queries]
    # Rows of G = sum_i E_d J^T J, and psi_i = E_d J^T (eps - eps_theta).
    rows = torch.cat([jac.double() / math.sqrt(TRAIN_DRAWS) for draws in train_jac for _, jac, _ in draws])
    psi = torch.stack([sum(jac.double().T @ (noise - eps).double() for eps, jac, noise in draws) / TRAIN_DRAWS for draws in train_jac])
    scale = float((rows * rows).sum() / len(rows))  # mean eigenvalue of G on its row space
    return train_jac, query_jac, rows, psi, scale


def test_distance_form_matches_brute_force_linearised_output_change(setup, brute_force):
    unet, scheduler, train, queries = setup
    _, query_jac, rows, psi, scale = brute_force
    lambdas = [1e-2 * scale, scale]
    scores = das_scores(
        unet,
        scheduler,
        train,
        queries,
        lambdas,
        output="jacobian",
        form="distance",
        output_directions=None,
        projection_dim=None,
        projection_seed=0,
        train_draws=TRAIN_DRAWS,
        query_draws=QUERY_DRAWS,
        seed=SEED,
    )
    assert scores.shape == (2, 2, 4) and scores.dtype == np.float32
    pixels = 64
    for index, lam in enumerate(lambdas):
        dtheta = _ridge(rows, psi, lam)  # [N, P]: theta(with i) - theta(without i)
        das = torch.stack([torch.stack([(jac.double() @ dtheta.T).square().sum(0) / pixels for _, jac, _ in draws]).mean(0) for draws in query_jac])
        assert (das > 0).all()
        np.testing.assert_allclose(scores[index], -das.numpy(), rtol=2e-4)


def test_signed_form_is_influence_with_the_exact_ggn(setup, brute_force):
    """tau = -(1/N) grad m(q)^T (F + lambda_F I)^{-1} grad loss_i with F the GGN of
    L = (1/N) sum_i loss_i (docs/definitions.md) and lambda_F = 2 lambda / (N D)."""
    unet, scheduler, train, queries = setup
    _, _, rows, _, scale = brute_force
    n, pixels = len(train), 64
    lambdas = [1e-2 * scale, scale]
    scores = das_scores(
        unet,
        scheduler,
        train,
        queries,
        lambdas,
        measurement="loss",
        output="jacobian",
        form="signed",
        output_directions=None,
        projection_dim=None,
        projection_seed=0,
        train_draws=TRAIN_DRAWS,
        query_draws=QUERY_DRAWS,
        seed=SEED,
    )
    loss_grads = torch.stack([_output_gradient(unet, scheduler, image, "loss", train_stream(SEED), TRAIN_DRAWS) for image in train])
    query_grads = torch.stack([_output_gradient(unet, scheduler, q, "loss", query_stream(SEED, "loss"), QUERY_DRAWS) for q in queries])
    ggn_rows = rows * math.sqrt(2 / (n * pixels))  # F = ggn_rows^T ggn_rows
    for index, lam in enumerate(lambdas):
        expected = -(query_grads @ _ridge(ggn_rows, loss_grads, 2 * lam / (n * pixels)).T) / n
        np.testing.assert_allclose(scores[index], expected.numpy(), rtol=2e-4, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("output", ["squared_norm", "mean"])
def test_scalar_outputs_match_brute_force(setup, output):
    unet, scheduler, train, queries = setup
    output_fn = MeanOutput() if output == "mean" else output
    stream = train_stream(SEED, output)
    phi = torch.stack([_output_gradient(unet, scheduler, image, output_fn, stream, TRAIN_DRAWS) for image in train])
    q = torch.stack([_output_gradient(unet, scheduler, image, output_fn, query_stream(SEED, output_fn), QUERY_DRAWS) for image in queries])
    residuals = []
    for image in train:
        timesteps, noise = _draws(scheduler, image, stream, TRAIN_DRAWS)
        loss = per_draw_output(unet, scheduler, image.unsqueeze(0).expand(TRAIN_DRAWS, *image.shape), noise, timesteps, "loss")
        residuals.append(loss.detach().double().sqrt().mean())
    residuals = torch.stack(residuals)
    lam = float((phi * phi).sum() / len(phi))
    raw = (q @ _ridge(phi, phi, lam).T) * residuals
    for form, expected in (("distance", -raw.square()), ("signed", -raw)):
        scores = das_scores(
            unet,
            scheduler,
            train,
            queries,
            [lam],
            output=output,
            form=form,
            projection_dim=None,
            projection_seed=0,
            train_draws=TRAIN_DRAWS,
            query_draws=QUERY_DRAWS,
            seed=SEED,
        )
        np.testing.assert_allclose(scores[0], expected.numpy(), rtol=1e-3, atol=1e-6 * float(expected.abs().max()))


def test_output_vjps_are_jacobian_transpose_products(setup, brute_force):
    unet, scheduler, train, _ = setup
    train_jac = brute_force[0]
    image = train[1]
    timesteps, noise = _draws(scheduler, image, train_stream(SEED), TRAIN_DRAWS)
    directions = draw_directions(7, 1, 0, TRAIN_DRAWS, (1, 8, 8), 5)
    assert directions.shape == (TRAIN_DRAWS, 5, 1, 8, 8)
    for d in range(TRAIN_DRAWS):  # sqrt(D) times orthonormal vectors, a pure function of the keys
        flat = directions[d].reshape(5, -1).double()
        torch.testing.assert_close(flat @ flat.T / 64, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(draw_directions(7, 1, 1, 1, (1, 8, 8), 5)[0], directions[1])
    vjps = output_vjps(unet, scheduler, image.unsqueeze(0).expand(TRAIN_DRAWS, 1, 8, 8), noise, timesteps, directions)
    assert vjps.shape == (TRAIN_DRAWS, 5, sum(p.numel() for p in attributed_parameters(unet)))
    for d, (_, jac, _) in enumerate(train_jac[1]):
        expected = directions[d].reshape(5, -1) @ jac
        torch.testing.assert_close(vjps[d], expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_rows_do_not_depend_on_chunking_or_row_order(setup):
    unet, scheduler, train, _ = setup

    def rows_by_image(images, max_rows):
        out = {}
        for row, block in jacobian_row_chunks(unet, scheduler, images, 3, 4, stream=11, max_rows=max_rows):
            out.setdefault(row, []).append(block)
        return {row: torch.cat(blocks) for row, blocks in out.items()}

    small, large = rows_by_image(train[:2], 1), rows_by_image(train[:2].flip(0), 1000)
    assert small[0].shape == (3 * 4, small[0].shape[1])
    # Equal up to float32 summation order (batched vs single-draw passes).
    for a, b in ((small[0], large[1]), (small[1], large[0])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("form", FORMS)
def test_shapes_finiteness_and_invariance_to_batching_and_order(setup, output, form):
    unet, scheduler, train, queries = setup
    settings = dict(output=output, form=form, output_directions=3, projection_dim=48, projection_seed=5, train_draws=2, query_draws=2, seed=SEED)
    lambdas = [1e2, 1e4]
    scores = das_scores(unet, scheduler, train, queries, lambdas, **settings, batch_examples=1, rows_per_projection=1)
    assert scores.shape == (2, 2, 4) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert np.abs(scores).max() > 0
    if form == "distance":
        assert (scores <= 0).all()  # tau = SCORE_SIGN * DAS, DAS >= 0
    batched = das_scores(unet, scheduler, train, queries, lambdas, **settings, batch_examples=64, rows_per_projection=10_000)
    np.testing.assert_allclose(batched, scores, rtol=1e-4, atol=1e-6 * np.abs(scores).max())
    # Draws are keyed by content: permuting examples and queries permutes the scores.
    train_order, query_order = [2, 0, 3, 1], [1, 0]
    permuted = das_scores(unet, scheduler, train[train_order], queries[query_order], lambdas, **settings)
    np.testing.assert_allclose(permuted, scores[:, query_order][:, :, train_order], rtol=1e-4, atol=1e-6 * np.abs(scores).max())


@pytest.mark.parametrize("form", FORMS)
def test_projection_approaches_the_unprojected_scores(setup, form):
    unet, scheduler, train, queries = setup
    settings = dict(output="jacobian", form=form, output_directions=8, train_draws=1, query_draws=1, seed=SEED)
    rows = torch.cat([block for _, block in jacobian_row_chunks(unet, scheduler, train, 1, 8, train_stream(SEED))])
    lam = float((rows * rows).sum() / len(rows))  # mean eigenvalue of G on its row space
    exact = das_scores(unet, scheduler, train, queries, [lam], projection_dim=None, projection_seed=0, **settings)[0]
    errors = {}
    for dim in (32, 512, 4096):
        errors[dim] = np.mean(
            [
                np.linalg.norm(das_scores(unet, scheduler, train, queries, [lam], projection_dim=dim, projection_seed=projection_seed, **settings)[0] - exact)
                for projection_seed in (0, 1)
            ]
        ) / np.linalg.norm(exact)
    # Johnson-Lindenstrauss: the error shrinks like 1/sqrt(k).
    assert errors[4096] < errors[512] < errors[32], errors
    assert errors[4096] < (0.2 if form == "distance" else 0.1), errors


def test_random_directions_approach_the_exact_jacobian(setup, brute_force):
    """Random orthonormal output directions: unbiased for J^T J, exact at S = D."""
    unet, scheduler, train, queries = setup
    lam = brute_force[4]
    settings = dict(output="jacobian", form="distance", projection_dim=None, projection_seed=0, train_draws=TRAIN_DRAWS, query_draws=QUERY_DRAWS, seed=SEED)
    exact = das_scores(unet, scheduler, train, queries, [lam], output_directions=None, **settings)[0]
    errors = {}
    for directions in (16, 48, 64):
        sketched = das_scores(unet, scheduler, train, queries, [lam], output_directions=directions, **settings)[0]
        errors[directions] = np.linalg.norm(sketched - exact) / np.linalg.norm(exact)
    assert errors[64] < 1e-5 and errors[48] < errors[16], errors
    with pytest.raises(ValueError):
        das_scores(unet, scheduler, train, queries, [lam], output_directions=65, **settings)


def test_invalid_settings_are_refused(setup):
    unet, scheduler, train, queries = setup
    base = dict(projection_dim=8, projection_seed=0, train_draws=1, query_draws=1, seed=0)
    for bad in ({"output": "loss"}, {"form": "absolute"}, {"output_directions": 0}, {"train_draws": 0}):
        with pytest.raises(ValueError):
            das_scores(unet, scheduler, train, queries, [1.0], **{**base, **bad})
    with pytest.raises(ValueError):
        das_scores(unet, scheduler, train, queries, 1.0, **base)
    with pytest.raises(ValueError):
        das_scores(unet, scheduler, train, queries, [-1.0], **base)


@pytest.mark.parametrize("output", ["jacobian", "squared_norm"])
def test_relative_lambda_is_a_multiple_of_the_mean_eigenvalue(setup, output, caplog):
    """lambda_scale mean_eigenvalue scores lambda x trace(G) / k, the unit it logs."""
    unet, scheduler, train, queries = setup
    layout = {"timesteps": "stratified", "antithetic": True}
    settings = dict(output=output, output_directions=3, projection_dim=48, projection_seed=5, train_draws=4, query_draws=4, seed=SEED, gradient_draws=layout)
    with caplog.at_level("INFO"):
        relative = das_scores(unet, scheduler, train, queries, [0.1, 10.0], lambda_scale="mean_eigenvalue", **settings)
    unit = float(next(r.getMessage() for r in caplog.records if "mean eigenvalue" in r.getMessage()).split("mean eigenvalue ")[1].split()[0])
    assert unit > 0
    absolute = das_scores(unet, scheduler, train, queries, [0.1 * unit, 10.0 * unit], **settings)
    np.testing.assert_allclose(relative, absolute, rtol=2e-3, atol=1e-3 * np.abs(absolute).max())
    with pytest.raises(ValueError, match="lambda_scale"):
        das_scores(unet, scheduler, train, queries, [1.0], lambda_scale="relative", **settings)
