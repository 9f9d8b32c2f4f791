"""Block PCG against dense solves, and the exact-GGN product against
curvlinops' ``GGNLinearOperator`` and a dense J^T J."""

from __future__ import annotations

import copy

import pytest
import torch
from curvlinops import GGNLinearOperator
from torch import nn

from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.attribution.iterative_solvers import GGNMatmat, block_pcg
from ldsbench.diffusion.model import FlatNoisePredictor, selected_module_names
from small_nets import NAMES, small_net_and_data
from tiny_models import tiny_model_and_images

pytestmark = pytest.mark.usefixtures("one_thread")


def spd(size: int, condition: float, seed: int = 0) -> torch.Tensor:
    """A dense SPD matrix with eigenvalues log-spaced from 1 to ``condition``."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(size, size, dtype=torch.float64, generator=generator))
    return q @ torch.diag(torch.logspace(0, torch.log10(torch.tensor(condition)).item(), size, dtype=torch.float64)) @ q.T


def rhs(size: int, columns: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(size, columns, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_block_pcg_converges_to_the_dense_solution():
    a, b = spd(40, 1e3), rhs(40, 5)
    b[:, 3] = 0.0  # a zero right-hand side is solved at once, by zero
    exact = torch.linalg.solve(a, b)
    for tolerance in (1e-4, 1e-10):
        x, info = block_pcg(lambda v: a @ v, b, tolerance=tolerance, max_iterations=200)
        assert info.converged and info.column_iterations[3] == 0 and (x[:, 3] == 0).all()
        # The reported residual is the true one, and within the tolerance.
        true = (b - a @ x).norm(dim=0) / b.norm(dim=0).clamp(min=1e-300)
        torch.testing.assert_close(info.relative_residuals, true * (b.norm(dim=0) > 0), rtol=1e-6, atol=1e-12)
        assert (info.relative_residuals <= tolerance).all()
        # Error bounded by the condition number times the residual.
        assert ((x - exact).norm(dim=0) <= 1e3 * tolerance * exact.norm(dim=0) + 1e-12).all()
    # CG on 40 distinct eigenvalues needs at most 40 steps in exact arithmetic;
    # round-off loses orthogonality (observed 76 steps at 1e-10).
    assert info.iterations <= 2 * 40


def test_shared_products_pass_only_the_columns_still_iterating():
    a = spd(30, 1e2)
    b = torch.cat([rhs(30, 2), a[:, :1]], dim=1)
    widths = []

    def matmat(v):
        widths.append(v.shape[1])
        return a @ v

    x, info = block_pcg(matmat, b, tolerance=1e-8, max_iterations=100)
    assert info.converged and widths[0] == 3 and widths == sorted(widths, reverse=True)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-5, atol=1e-8)
    # Each column's iterations are the products it took part in.
    assert info.column_iterations.sum().item() == sum(widths)


def test_exact_inverse_preconditioner_converges_in_one_iteration():
    a, b = spd(25, 1e6), rhs(25, 4)
    inverse = torch.linalg.inv(a)
    x, info = block_pcg(lambda v: a @ v, b, lambda r: inverse @ r, tolerance=1e-8, max_iterations=10)
    assert info.converged and info.iterations == 1
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    # Started at the preconditioned right-hand side, it is solved before any iteration.
    x, info = block_pcg(lambda v: a @ v, b, lambda r: inverse @ r, tolerance=1e-8, max_iterations=10, start=inverse @ b)
    assert info.converged and info.iterations == 0


def test_a_good_preconditioner_takes_fewer_iterations_and_max_iterations_stops():
    a, b = spd(60, 1e5), rhs(60, 3)
    # A perturbed inverse: PCG converges fast; plain CG takes many more steps.
    approx = torch.linalg.inv(a + 0.05 * spd(60, 10.0, seed=3))
    _, plain = block_pcg(lambda v: a @ v, b, tolerance=1e-8, max_iterations=500)
    _, preconditioned = block_pcg(lambda v: a @ v, b, lambda r: approx @ r, tolerance=1e-8, max_iterations=500)
    assert preconditioned.converged and preconditioned.iterations < plain.iterations / 2
    _, stopped = block_pcg(lambda v: a @ v, b, tolerance=1e-12, max_iterations=3)
    assert stopped.iterations == 3 and not stopped.converged and (stopped.relative_residuals > 1e-12).all()
    x, zero = block_pcg(lambda v: a @ v, b, tolerance=1e-12, max_iterations=0, start=b)
    assert zero.iterations == 0 and torch.equal(x, b)


def test_ggn_matmat_equals_curvlinops_on_a_small_net():
    model, batches = small_net_and_data()
    weights = [dict(model.named_modules())[name].weight for name in NAMES]
    operator = GGNLinearOperator(model, nn.MSELoss(reduction="mean"), weights, batches, check_deterministic=False)
    ggn = GGNMatmat(model, NAMES, batches)
    vectors = rhs(ggn.num_params, 3)
    torch.testing.assert_close(ggn(vectors), operator @ vectors, rtol=1e-10, atol=1e-12)
    assert ggn.num_data == 15 and ggn.draws_multiplied == 15 * 3
    # The model's requires_grad flags are left as they were.
    assert all(p.requires_grad for p in model.parameters())


def test_ggn_matmat_on_the_unet_is_the_dense_jacobian_product():
    unet, scheduler, train, _ = tiny_model_and_images(n_train=2)
    model = FlatNoisePredictor(copy.deepcopy(unet)).double()
    # Attention weights and a convolution: attention's products are twice differentiable here.
    names = selected_module_names(unet, "^up_blocks.0.attentions|^conv_out$", prefix="unet.")
    data = NoisedTrainingData(train, scheduler, 1, seed=0, batch_size=1)
    ggn = GGNMatmat(model, names, data, num_data=data.num_data, batch_size_fn=batch_size_of)
    weights = ggn.weights
    # Dense J [n D, P] of the attributed weights by reverse mode, row by row.
    rows = []
    for inputs, _ in data:
        outputs = model(inputs).reshape(-1)
        for k in range(len(outputs)):
            grads = torch.autograd.grad(outputs[k], weights, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jacobian = torch.stack(rows)
    num_pixels = train[0].numel()
    dense = 2.0 / (data.num_data * num_pixels) * jacobian.T @ jacobian
    vectors = rhs(ggn.num_params, 2)
    torch.testing.assert_close(ggn(vectors), dense @ vectors, rtol=1e-9, atol=1e-12)


def test_each_iteration_reports_its_residuals():
    a, b = spd(30, 1e2), rhs(30, 3)
    seen = []
    _, info = block_pcg(lambda v: a @ v, b, tolerance=1e-8, max_iterations=100, on_iteration=lambda step, residuals: seen.append((step, residuals.clone())))
    assert [step for step, _ in seen] == list(range(1, info.iterations + 1))
    torch.testing.assert_close(seen[-1][1], info.relative_residuals)
    assert seen[-1][1].max() < seen[0][1].max()
