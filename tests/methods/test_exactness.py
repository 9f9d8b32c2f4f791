"""Exactness: the curvature and TRAK code against closed forms where theory
says they must agree.

Curvature (float64, exact GGN via curvlinops' ``GGNLinearOperator``, type-2
Fisher so that K-FAC's output factor is exact, not sampled). The relations
checked are those of Eschenhagen et al. (2023), which curvlinops 3.0.1 tests
in its own suite (``test_kfac_type2_weight_sharing``,
``test_ekfac_type2_weight_sharing``):

- without weight sharing, K-FAC is exact on the per-layer (diagonal) blocks
  of a deep *linear* network's GGN under MSE, and K-FAC-expand and
  K-FAC-reduce are the same approximation;
- with weight sharing, K-FAC-expand is exact in the *expand* setting (every
  shared position is its own loss term, e.g. a per-pixel MSE on the
  flattened output, as for the UNet here) and K-FAC-reduce in the *reduce*
  setting (the shared dimension is averaged before the loss, e.g. average
  pooling after a Conv2d); the other approximation is then not exact;
- EK-FAC's corrected eigenvalues are the exact second moments of the
  per-example gradients in the Kronecker eigenbasis, i.e. the diagonal of
  the exact GGN block rotated into that basis, on any network; so EK-FAC is
  never further from the exact block (Frobenius norm) than K-FAC.

TRAK: without projection and with lambda -> 0 the scores are the kernel
q^T (Phi^T Phi)^+ phi_i of the raw gradients, and the random projection
converges to it as the projection dimension grows.
"""

from __future__ import annotations

import pytest
import torch
from curvlinops import GGNLinearOperator
from torch import nn

from ldsbench.attribution.curvature import CurvatureSettings, KroneckerEigenbasis, fit_kronecker_eigenbasis
from ldsbench.attribution.projection import RandomProjector
from ldsbench.attribution.scoring import SCORE_SIGN, query_gradients, training_gradient_batches
from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.methods.trak import trak_kernel_scores, trak_scores
from tiny_models import UNET

DAMPINGS = [1e-8, 1e-3, 1.0]
KINDS = ["kfac", "ekfac"]
APPROXES = ["expand", "reduce"]


# --- helpers -----------------------------------------------------------------


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _weights(model, names):
    modules = dict(model.named_modules())
    return [modules[n].weight for n in names]


def _fit(model, names, data, kind, approx) -> KroneckerEigenbasis:
    return fit_kronecker_eigenbasis(model, names, data, CurvatureSettings(kind=kind, kfac_approx=approx, fisher_type="type-2"))


def _exact_ggn(model, names, data) -> torch.Tensor:
    """[P, P] exact GGN of the mean MSE over the named weights (flat layout as in the basis)."""
    params = _weights(model, names)
    operator = GGNLinearOperator(model, nn.MSELoss(reduction="mean"), params, data, check_deterministic=False)
    return operator @ torch.eye(sum(p.numel() for p in params), dtype=torch.float64)


def _block_sizes(model, names):
    return [w.numel() for w in _weights(model, names)]


def _block_diagonal(matrix: torch.Tensor, sizes) -> torch.Tensor:
    """[P, P] copy of ``matrix`` keeping only the diagonal blocks of ``sizes``."""
    return torch.block_diag(*[block.split(sizes, dim=1)[i] for i, block in enumerate(matrix.split(sizes, dim=0))])


def _dense(basis: KroneckerEigenbasis) -> torch.Tensor:
    """[P, P] block-diagonal matrix sum_m (Q_out (x) Q_in) diag(vec E) (Q_out (x) Q_in)^T."""
    blocks = []
    for name in basis.module_names:
        q = torch.kron(basis.q_out[name], basis.q_in[name])
        blocks.append(q @ torch.diag(basis.eigenvalues[name].reshape(-1)) @ q.T)
    return torch.block_diag(*blocks)


def _dense_solve(matrix, grads, dampings):
    """[L, B, P]: (matrix + lam I)^{-1} g for each damping and row g of grads [B, P]."""
    eye = torch.eye(matrix.shape[0], dtype=torch.float64)
    return torch.stack([torch.linalg.solve(matrix + lam * eye, grads.T).T for lam in dampings])


def _relative_error(approx, exact):
    return ((approx - exact).norm() / exact.norm()).item()


def _assert_preconditioning_exact(basis, exact, seed=0):
    grads = _randn(4, basis.num_params(), seed=seed)
    result = torch.stack([basis.solve(grads, damping) for damping in DAMPINGS])
    expected = _dense_solve(exact, grads, DAMPINGS)
    for lam, got, want in zip(DAMPINGS, result, expected):
        # Relative to the solution's size: at lambda = 1e-8 it is large.
        assert _relative_error(got, want) < 1e-7, lam


# --- curvature: no weight sharing ---------------------------------------------


def _batches(in_features, out_features, sizes, seed):
    return [(_randn(n, in_features, seed=seed + i), _randn(n, out_features, seed=seed + 100 + i)) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("approx", APPROXES)
@pytest.mark.parametrize("kind", KINDS)
def test_single_linear_layer_is_exact(kind, approx):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).double()
    # Unequal batch sizes: the normalisation must weight data points, not batches.
    data = _batches(5, 3, [4, 7, 2], seed=1)
    basis = _fit(model, ["0"], data, kind, approx)
    exact = _exact_ggn(model, ["0"], data)
    torch.testing.assert_close(_dense(basis), exact, rtol=1e-10, atol=1e-13)
    _assert_preconditioning_exact(basis, exact)


@pytest.mark.parametrize("kind", KINDS)
def test_deep_linear_network_blocks_are_exact_and_expand_equals_reduce(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)).double()
    names = ["0", "1", "2"]
    data = _batches(6, 3, [5, 9], seed=2)
    exact = _exact_ggn(model, names, data)
    blocks = _block_diagonal(exact, _block_sizes(model, names))
    # K-FAC is block-diagonal by construction: the exact GGN has cross-layer
    # terms, so only its diagonal blocks can be matched.
    assert (exact - blocks).abs().max() > 1e-3 * exact.abs().max()

    fits = {approx: _fit(model, names, data, kind, approx) for approx in APPROXES}
    for basis in fits.values():
        torch.testing.assert_close(_dense(basis), blocks, rtol=1e-9, atol=1e-13)
        _assert_preconditioning_exact(basis, blocks)
    # No shared dimension: both approximations run the same computation.
    for name in names:
        torch.testing.assert_close(fits["expand"].eigenvalues[name], fits["reduce"].eigenvalues[name], rtol=1e-12, atol=1e-15)


# --- curvature: weight sharing ------------------------------------------------


class TokenNet(nn.Module):
    """Deep linear network applied per position of [B, S, 5] inputs.

    ``expand``: every position is a loss term, outputs flattened to
    [B, S * 3] (the per-pixel MSE of the noise predictor). ``reduce``: the
    positions are averaged before the loss, outputs [B, 3].
    """

    def __init__(self, setting):
        super().__init__()
        self.setting = setting
        self.first, self.second = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.second(self.first(x))  # [B, S, 3]
        return h.flatten(1) if self.setting == "expand" else h.mean(dim=1)


class ConvNet(nn.Module):
    """One padded Conv2d (weights shared over the 4 x 4 positions) on [B, 2, 4, 4].

    ``expand``: output flattened to [B, 3 * 16] like ``FlatNoisePredictor``;
    ``reduce``: average pooling to [B, 3].
    """

    def __init__(self, setting):
        super().__init__()
        self.setting = setting
        self.conv = nn.Conv2d(2, 3, kernel_size=3, padding=1)

    def forward(self, x):
        h = self.conv(x)  # [B, 3, 4, 4]
        return h.flatten(1) if self.setting == "expand" else h.mean(dim=(2, 3))


def _shared_case(network, setting):
    torch.manual_seed(0)
    if network == "tokens":
        model, names = TokenNet(setting).double(), ["first", "second"]
        inputs = [_randn(n, 6, 5, seed=10 + n) for n in (3, 5)]
    else:
        model, names = ConvNet(setting).double(), ["conv"]
        inputs = [_randn(n, 2, 4, 4, seed=10 + n) for n in (3, 5)]
    data = [(x, _randn(len(x), model(x).shape[1], seed=20 + len(x))) for x in inputs]
    return model, names, data


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting", APPROXES)
@pytest.mark.parametrize("network", ["tokens", "conv"])
def test_weight_sharing_matching_approximation_is_exact(network, setting, kind):
    model, names, data = _shared_case(network, setting)
    exact = _exact_ggn(model, names, data)
    blocks = _block_diagonal(exact, _block_sizes(model, names))

    matching = _fit(model, names, data, kind, setting)
    torch.testing.assert_close(_dense(matching), blocks, rtol=1e-9, atol=1e-13)
    _assert_preconditioning_exact(matching, blocks)

    # The other approximation is not exact in this setting (for K-FAC; EK-FAC's
    # eigenvalue correction can only partly repair the wrong basis).
    other = _fit(model, names, data, kind, "reduce" if setting == "expand" else "expand")
    assert _relative_error(_dense(other), blocks) > 1e-3


@pytest.mark.parametrize("approx", APPROXES)
def test_ekfac_eigenvalues_are_the_exact_ggn_diagonal_in_the_eigenbasis(approx):
    # A nonlinear network with weight sharing, where neither approximation is
    # exact: EK-FAC still has the exact diagonal in its own eigenbasis.
    from small_nets import NAMES, small_net_and_data

    model, data = small_net_and_data()
    exact = _exact_ggn(model, NAMES, data)
    sizes = _block_sizes(model, NAMES)
    exact_blocks = [block.split(sizes, dim=1)[i] for i, block in enumerate(exact.split(sizes, dim=0))]
    kfac = _fit(model, NAMES, data, "kfac", approx)
    ekfac = _fit(model, NAMES, data, "ekfac", approx)
    for name, block in zip(NAMES, exact_blocks):
        # Same basis: EK-FAC only replaces the eigenvalues.
        torch.testing.assert_close(ekfac.q_out[name], kfac.q_out[name])
        torch.testing.assert_close(ekfac.q_in[name], kfac.q_in[name])
        q = torch.kron(ekfac.q_out[name], ekfac.q_in[name])
        rotated_diagonal = torch.diagonal(q.T @ block @ q).reshape(ekfac.eigenvalues[name].shape)
        torch.testing.assert_close(ekfac.eigenvalues[name], rotated_diagonal, rtol=1e-9, atol=1e-14)
    blocks = torch.block_diag(*exact_blocks)
    ekfac_error, kfac_error = _relative_error(_dense(ekfac), blocks), _relative_error(_dense(kfac), blocks)
    assert ekfac_error < kfac_error, (ekfac_error, kfac_error)
    assert kfac_error > 1e-3  # the case is not trivially exact


# --- TRAK ------------------------------------------------------------------------

# A smaller UNet than the other tests' (P ~ 10^4) keeps dense projections cheap.
SMALL_UNET = dict(UNET, block_out_channels=[4, 8], norm_num_groups=2, attention_head_dim=4)
DRAWS = dict(train_draws=2, query_draws=2, seed=0)


@pytest.fixture(scope="module")
def trak_setup(one_thread):
    torch.manual_seed(0)
    unet, scheduler = build_unet(SMALL_UNET).eval(), build_scheduler({})
    generator = torch.Generator().manual_seed(3)
    train = torch.rand(7, 1, 8, 8, generator=generator) * 2 - 1
    queries = torch.rand(3, 1, 8, 8, generator=generator) * 2 - 1
    features = {}
    for output_fn in ("loss", "squared_norm"):
        phi = torch.cat([g for _, g in training_gradient_batches(unet, scheduler, train, output_fn, 2, seed=0, progress=False)])
        # With measurement "loss", TRAK's query function equals D-TRAK's choice
        # here: the output function itself.
        q = query_gradients(unet, scheduler, queries, output_fn, 2, seed=0, progress=False)
        features[output_fn] = (q, phi)
    return unet, scheduler, train, queries, features


@pytest.mark.parametrize("output_fn", ["loss", "squared_norm"])
def test_trak_without_projection_at_lambda_zero_is_the_pseudo_inverse_kernel(trak_setup, output_fn):
    unet, scheduler, train, queries, features = trak_setup
    q, phi = (f.double() for f in features[output_fn])
    n, k = phi.shape
    assert k > n  # Phi^T Phi [k, k] is singular: the limit needs the pseudo-inverse
    gram_scale = (phi @ phi.T).trace().item() / n
    lambdas = [0.0] + [gram_scale * 10.0**-e for e in (2, 4, 6, 8)]
    scores = trak_scores(unet, scheduler, train, queries, lambdas, measurement="loss", output_fn=output_fn, projection_dim=None, projection_seed=0, **DRAWS)
    assert scores.shape == (len(lambdas), 3, 7)

    # q^T (Phi^T Phi)^+ phi_i = (q^T Phi^+)_i, computed two independent ways.
    via_pinv = q @ torch.linalg.pinv(phi)
    # a = argmin ||Phi^T a - q||: Phi^T [k, N] has full column rank, so a is unique.
    via_lstsq = torch.linalg.lstsq(phi.T, q.T, driver="gelsd").solution.T
    torch.testing.assert_close(via_pinv, via_lstsq, rtol=1e-6, atol=1e-9 * via_pinv.abs().max().item())
    expected = SCORE_SIGN * via_pinv
    scale = expected.abs().max().item()
    torch.testing.assert_close(torch.from_numpy(scores[0]).double(), expected, rtol=1e-4, atol=1e-5 * scale)
    # The same kernel straight from trak_kernel_scores on the raw gradients.
    torch.testing.assert_close(trak_kernel_scores(q, phi, [0.0])[0], via_pinv, rtol=1e-7, atol=1e-9 * scale)

    # lambda -> 0 approaches the pseudo-inverse kernel (also for queries
    # outside the span of Phi: that part is orthogonal to every phi_i).
    errors = [(torch.from_numpy(s).double() - expected).abs().max().item() / scale for s in scores[1:]]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4, errors


def test_random_projection_converges_to_the_unprojected_kernel(trak_setup):
    unet, scheduler, train, queries, features = trak_setup
    q, phi = features["loss"]
    num_params = phi.shape[1]
    # Moderate ridge: lambda = mean eigenvalue of the N x N Gram matrix. The
    # kernel q^T Phi^T (Phi Phi^T + lambda I)^{-1} depends on the features only
    # through their inner products, which the projection preserves up to
    # O(1/sqrt(dim)) (Johnson-Lindenstrauss), and (Phi Phi^T + lambda I)^{-1}
    # amplifies that error by at most ~ ||Phi||^2 / lambda, so the error shrinks
    # like 1/sqrt(dim). At lambda -> 0 the amplification is 1 / (smallest
    # eigenvalue), unbounded for nearly collinear gradients, and the error need
    # not decrease smoothly.
    lam = (phi.double() @ phi.double().T).trace().item() / len(phi)
    exact = trak_kernel_scores(q, phi, [lam])[0]
    dims, seeds = (16, 128, 1024, 4096), (0, 1, 2)
    errors = []
    for dim in dims:
        error = 0.0
        for seed in seeds:  # averaged so that one lucky draw cannot break monotonicity
            projected = RandomProjector(num_params, dim, seed=seed).project(torch.cat([q, phi]))
            error += _relative_error(trak_kernel_scores(projected[: len(q)], projected[len(q) :], [lam])[0], exact) / len(seeds)
        errors.append(error)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # About 4% at dim 4096 (0.5 at dim 16): the 1/sqrt(dim) rate would give 0.0625 x.
    assert errors[-1] < 0.08 and errors[-1] < 0.15 * errors[0], errors

    # trak_scores projects exactly this way (features of the same projector).
    projector = RandomProjector(num_params, 64, seed=5)
    expected = SCORE_SIGN * trak_kernel_scores(projector.project(q), projector.project(phi), [lam])[0]
    scores = trak_scores(unet, scheduler, train, queries, [lam], measurement="loss", output_fn="loss", projection_dim=64, projection_seed=5, **DRAWS)[0]
    torch.testing.assert_close(torch.from_numpy(scores).double(), expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())
