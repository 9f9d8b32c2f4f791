"""Tests for the K-FAC / EK-FAC Kronecker eigenbasis (float64, tiny models)."""

from __future__ import annotations

import pytest
import torch
from curvlinops import EKFACLinearOperator, GGNLinearOperator, KFACLinearOperator
from torch import nn

from ldsbench.attribution.curvature import CurvatureSettings, KroneckerEigenbasis, fit_kronecker_eigenbases, fit_kronecker_eigenbasis, save_eigenbases
from small_nets import NAMES, small_net_and_data

DAMPINGS = [1e-3, 1e-1, 10.0]


def weights(model, names):
    modules = dict(model.named_modules())
    return [modules[n].weight for n in names]


def dense_from_basis(basis: KroneckerEigenbasis) -> torch.Tensor:
    """[P, P] block-diagonal matrix sum_m (Q_out (x) Q_in) diag(vec E) (Q_out (x) Q_in)^T."""
    blocks = []
    for name in basis.module_names:
        q = torch.kron(basis.q_out[name], basis.q_in[name])
        blocks.append(q @ torch.diag(basis.eigenvalues[name].reshape(-1)) @ q.T)
    return torch.block_diag(*blocks)


def dense_curvlinops(model, names, data, settings: CurvatureSettings) -> torch.Tensor:
    """Dense matrix of curvlinops' own (E)K-FAC operator over the named weights."""
    cls = {"kfac": KFACLinearOperator, "ekfac": EKFACLinearOperator}[settings.kind]
    params = weights(model, names)
    op = cls(
        model,
        nn.MSELoss(reduction="mean"),
        params,
        data,
        check_deterministic=False,
        seed=settings.seed,
        fisher_type=settings.fisher_type,
        mc_samples=settings.mc_samples,
        kfac_approx=settings.kfac_approx,
        separate_weight_and_bias=True,
    )
    num = sum(p.numel() for p in params)
    return op @ torch.eye(num, dtype=torch.float64)


def precondition(basis, grads, dampings):
    """[L, B, P]: ``basis.solve`` for each damping."""
    return torch.stack([basis.solve(grads, damping) for damping in dampings])


def dense_solve(dense, grads, dampings):
    eye = torch.eye(dense.shape[0], dtype=dense.dtype)
    return torch.stack([torch.linalg.solve(dense + lam * eye, grads.T).T for lam in dampings])


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_single_linear_layer_matches_exact_ggn(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    data = [(torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)) for _ in range(2)]
    settings = CurvatureSettings(kind=kind, fisher_type="type-2")

    basis = fit_kronecker_eigenbasis(model, ["0"], data, settings)

    ggn = GGNLinearOperator(model, nn.MSELoss(reduction="mean"), [model[0].weight], data, check_deterministic=False) @ torch.eye(12, dtype=torch.float64)
    assert basis.num_params() == 12
    assert basis.eigenvalues["0"].shape == (3, 4)
    torch.testing.assert_close(dense_from_basis(basis), ggn, rtol=1e-10, atol=1e-12)
    # Mean eigenvalue is trace / P of the same matrix.
    assert basis.mean_eigenvalue() == pytest.approx(ggn.trace().item() / 12, rel=1e-10)


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_single_unshared_conv_matches_exact_ggn(kind):
    # A kernel covering the whole 2x2 input has no weight sharing, so K-FAC is
    # exact; this pins the [d_out, c_in*kh*kw] layout to autograd's gradients.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, kernel_size=2), nn.Flatten()).double()
    data = [(torch.randn(7, 2, 2, 2, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64))]
    basis = fit_kronecker_eigenbasis(model, ["0"], data, CurvatureSettings(kind=kind, fisher_type="type-2"))

    ggn = GGNLinearOperator(model, nn.MSELoss(reduction="mean"), [model[0].weight], data, check_deterministic=False) @ torch.eye(24, dtype=torch.float64)
    assert basis.eigenvalues["0"].shape == (3, 8)
    torch.testing.assert_close(dense_from_basis(basis), ggn, rtol=1e-10, atol=1e-12)


def test_factor_sides_on_rectangular_layer():
    # d_out != d_in and non-identity output factor: a swapped side or a
    # transposed eigenvalue matrix would fail shape or value checks.
    model, data = small_net_and_data()
    settings = CurvatureSettings(kind="kfac", fisher_type="type-2")
    basis = fit_kronecker_eigenbasis(model, ["token"], data, settings)
    assert basis.q_out["token"].shape == (4, 4)
    assert basis.q_in["token"].shape == (3, 3)
    assert basis.eigenvalues["token"].shape == (4, 3)
    expected = dense_curvlinops(model, ["token"], data, settings)
    torch.testing.assert_close(dense_from_basis(basis), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kfac_approx", ["expand", "reduce"])
@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_solve_matches_dense_solve(kind, kfac_approx):
    model, data = small_net_and_data()
    settings = CurvatureSettings(kind=kind, kfac_approx=kfac_approx, fisher_type="type-2")
    basis = fit_kronecker_eigenbasis(model, NAMES, data, settings)

    dense = dense_curvlinops(model, NAMES, data, settings)
    assert basis.num_params() == dense.shape[0] == 3 * 18 + 4 * 3 + 3 * 64
    torch.testing.assert_close(dense_from_basis(basis), dense, rtol=1e-8, atol=1e-12)

    grads = torch.randn(4, basis.num_params(), dtype=torch.float64)
    result = precondition(basis, grads, DAMPINGS)
    assert result.shape == (len(DAMPINGS), 4, basis.num_params())
    assert result.dtype == torch.float64
    torch.testing.assert_close(result, dense_solve(dense, grads, DAMPINGS), rtol=1e-7, atol=1e-9)


def test_expand_and_reduce_differ_on_weight_sharing_layers():
    model, data = small_net_and_data()
    fits = {
        approx: fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(kind="kfac", kfac_approx=approx, fisher_type="type-2"))
        for approx in ("expand", "reduce")
    }
    for name in ("conv", "token"):
        assert not torch.allclose(fits["expand"].eigenvalues[name], fits["reduce"].eigenvalues[name])
    # The head sees no weight sharing, so both approximations coincide there.
    torch.testing.assert_close(fits["expand"].eigenvalues["head"], fits["reduce"].eigenvalues["head"])


def test_save_load_roundtrip(tmp_path):
    model, data = small_net_and_data()
    settings = CurvatureSettings(kind="ekfac", fisher_type="mc", mc_samples=2, seed=3)
    basis = fit_kronecker_eigenbasis(model, NAMES, data, settings)
    path = tmp_path / "sub" / "basis.pt"
    basis.save(path)
    loaded = KroneckerEigenbasis.load(path)

    assert loaded.module_names == NAMES
    assert loaded.settings == settings
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left behind
    grads = torch.randn(3, basis.num_params())
    assert torch.equal(precondition(loaded, grads, DAMPINGS), precondition(basis, grads, DAMPINGS))


@pytest.mark.parametrize(
    "settings",
    [
        CurvatureSettings(kind="ekfac", fisher_type="mc", mc_samples=3, seed=1),
        CurvatureSettings(kind="kfac", fisher_type="mc", mc_samples=3, seed=1),
        CurvatureSettings(kind="ekfac", fisher_type="empirical"),
        CurvatureSettings(kind="kfac", fisher_type="empirical"),
    ],
    ids=["ekfac-mc3", "kfac-mc3", "ekfac-empirical", "kfac-empirical"],
)
def test_mc_and_empirical_are_psd_and_match_curvlinops(settings):
    model, data = small_net_and_data()
    basis = fit_kronecker_eigenbasis(model, NAMES, data, settings)

    for name in NAMES:
        for q in (basis.q_out[name], basis.q_in[name]):
            torch.testing.assert_close(q.T @ q, torch.eye(q.shape[0], dtype=torch.float64))
        assert (basis.eigenvalues[name] >= 0).all()
        assert basis.eigenvalues[name].sum() > 0
    dense = dense_from_basis(basis)
    assert torch.linalg.eigvalsh(dense).min() > -1e-12 * dense.abs().max()
    # Same seed and sample count as curvlinops' own operator -> same matrix.
    torch.testing.assert_close(dense, dense_curvlinops(model, NAMES, data, settings), rtol=1e-8, atol=1e-12)
    grads = torch.randn(2, basis.num_params(), dtype=torch.float64)
    quad = (basis.solve(grads, 1e-2) * grads).sum(dim=1)
    assert (quad > 0).all()


def test_mc_seed_changes_estimate():
    model, data = small_net_and_data()
    a = fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(kind="ekfac", seed=0))
    b = fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(kind="ekfac", seed=0))
    c = fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(kind="ekfac", seed=1))
    assert torch.equal(a.eigenvalues["head"], b.eigenvalues["head"])
    assert not torch.allclose(a.eigenvalues["head"], c.eigenvalues["head"])


def test_dict_inputs_match_tensor_inputs():
    model, data = small_net_and_data()

    class DictNet(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batch):
            return self.inner(batch["x"])

    settings = CurvatureSettings(kind="ekfac", fisher_type="type-2")
    plain = fit_kronecker_eigenbasis(model, NAMES, data, settings)
    wrapped = fit_kronecker_eigenbasis(
        DictNet(model),
        [f"inner.{n}" for n in NAMES],
        [({"x": x}, y) for x, y in data],
        settings,
        num_data=15,
        batch_size_fn=lambda batch: batch["x"].shape[0],
    )
    for name in NAMES:
        torch.testing.assert_close(wrapped.eigenvalues[f"inner.{name}"], plain.eigenvalues[name])


def test_float32_model_gives_float64_basis():
    model, data = small_net_and_data()
    settings = CurvatureSettings(kind="ekfac", fisher_type="type-2")
    reference = fit_kronecker_eigenbasis(model, NAMES, data, settings)
    model32 = model.float()
    data32 = [(x.float(), y.float()) for x, y in data]
    basis = fit_kronecker_eigenbasis(model32, NAMES, data32, settings)
    assert all(basis.q_out[n].dtype == torch.float64 for n in NAMES)
    assert all(basis.eigenvalues[n].dtype == torch.float64 for n in NAMES)
    assert all(w.dtype == torch.float32 for w in weights(model32, NAMES))
    torch.testing.assert_close(dense_from_basis(basis), dense_from_basis(reference), rtol=1e-4, atol=1e-7)


def test_frozen_weights_are_restored():
    model, data = small_net_and_data()
    model.requires_grad_(False)
    basis = fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(fisher_type="type-2"))
    assert basis.mean_eigenvalue() > 0
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("field, value", [("kind", "shampoo"), ("kfac_approx", "average"), ("fisher_type", "forward-only")])
def test_bad_settings_raise(field, value):
    with pytest.raises(ValueError, match=value):
        CurvatureSettings(**{field: value})


def test_bad_module_and_output_raise():
    model, data = small_net_and_data()
    with pytest.raises(ValueError, match="missing"):
        fit_kronecker_eigenbasis(model, ["missing"], data, CurvatureSettings())
    image_model = nn.Sequential(nn.Conv2d(2, 1, 1))  # [B, 1, 4, 4] output, not [B, D]
    image_data = [(x, torch.randn(5, 1, 4, 4, dtype=torch.float64)) for x, _ in data]
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        fit_kronecker_eigenbasis(image_model.double(), ["0"], image_data, CurvatureSettings(kind="kfac"))


def test_one_ekfac_fit_gives_kfac_too(tmp_path):
    """K-FAC from the EK-FAC fit equals a K-FAC-only fit (same factors and
    targets), and both kinds round-trip through one file."""
    model, data = small_net_and_data()
    both = fit_kronecker_eigenbases(model, NAMES, data, CurvatureSettings(kind="ekfac", seed=3))
    alone = fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(kind="kfac", seed=3))
    for name in NAMES:
        assert torch.equal(both["kfac"].eigenvalues[name], alone.eigenvalues[name])
        assert torch.equal(both["kfac"].q_in[name], alone.q_in[name])
    path = tmp_path / "both.pt"
    save_eigenbases(path, both)
    for kind in ("kfac", "ekfac"):
        loaded = KroneckerEigenbasis.load(path, kind)
        assert loaded.settings.kind == kind
        assert all(torch.equal(loaded.eigenvalues[n], both[kind].eigenvalues[n]) for n in NAMES)
    with pytest.raises(ValueError, match="not 'ekfac'"):
        save_eigenbases(tmp_path / "kfac.pt", {"kfac": alone})
        KroneckerEigenbasis.load(tmp_path / "kfac.pt", "ekfac")


def test_basis_moves_to_a_device_whole():
    model, data = small_net_and_data()
    basis = fit_kronecker_eigenbasis(model, NAMES, data, CurvatureSettings(kind="kfac", fisher_type="type-2"))
    moved = basis.to("cpu")
    grads = torch.randn(2, basis.num_params(), dtype=torch.float64)
    assert torch.equal(moved.solve(grads, 0.1), basis.solve(grads, 0.1)) and moved.settings == basis.settings
