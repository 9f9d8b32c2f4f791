"""K-FAC / EK-FAC curvature held as a per-module Kronecker eigenbasis.

The curvature approximated is the generalized Gauss-Newton (GGN) of the mean
squared error ``MSELoss(reduction="mean")`` over model outputs of shape
``[B, D]``, restricted to the ``weight`` of the attributed ``Linear`` and
``Conv2d`` modules. For one module with weight viewed as ``W [d_out, d_in]``
and flattened row-major, both approximations share the Kronecker eigenbasis

    F_module ~= (Q_out (x) Q_in) diag(vec(E)) (Q_out (x) Q_in)^T,

where ``Q_out`` diagonalises the output-gradient factor ``G [d_out, d_out]``,
``Q_in`` the input factor ``A [d_in, d_in]``, and ``E [d_out, d_in]`` holds the
eigenvalues: ``E[i, j] = eig(G)[i] * eig(A)[j]`` for K-FAC, and the corrected
eigenvalues (second moments of per-example gradients in the eigenbasis) for
EK-FAC. Because damping only shifts ``E``, one eigendecomposition serves any
number of dampings: with ``R = Q_out^T G Q_in``,

    g_q^T (F + lam I)^{-1} g_i = sum_ab R_q[a, b] R_i[a, b] / (E[a, b] + lam),

which ``ldsbench.methods.influence`` uses to score many dampings from one copy of
the rotated query gradients.

The factors are computed by curvlinops 3.0.1. Its K-FAC weight block is
``G (x) A`` in the row-major weight layout used here (``_matmat`` multiplies
``G @ W @ A``), and its corrected eigenvalues have the weight's shape
``[d_out, d_in]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from curvlinops import EKFACLinearOperator, KFACLinearOperator
from torch import Tensor, nn
from tqdm import tqdm

from ldsbench.runtime.io import atomic_path, state_digest
from ldsbench.runtime.provenance import CorruptedArtifactError

KINDS = ("kfac", "ekfac")
KFAC_APPROXES = ("expand", "reduce")
FISHER_TYPES = ("mc", "type-2", "empirical")
_FORMAT = "ldsbench.kronecker_eigenbasis.v2"


@dataclass(frozen=True)
class CurvatureSettings:
    """How the curvature is fitted.

    kind: ``"kfac"`` or ``"ekfac"``.
    kfac_approx: ``"expand"`` or ``"reduce"``; matters only for weight-sharing
        layers (``Conv2d``, ``Linear`` on ``[B, seq, C]`` inputs).
    fisher_type: ``"mc"`` (GGN with targets sampled from the model's Gaussian),
        ``"type-2"`` (exact GGN), or ``"empirical"`` (empirical Fisher).
    mc_samples: sampled targets per data point; must be 1 unless ``"mc"``.
    seed: seed of the target sampler.
    """

    kind: str = "ekfac"
    kfac_approx: str = "expand"
    fisher_type: str = "mc"
    mc_samples: int = 1
    seed: int = 0

    def __post_init__(self):
        for field, value, allowed in (
            ("kind", self.kind, KINDS),
            ("kfac_approx", self.kfac_approx, KFAC_APPROXES),
            ("fisher_type", self.fisher_type, FISHER_TYPES),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {field} {value!r}; expected one of {allowed}.")
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {self.mc_samples}.")
        if self.fisher_type != "mc" and self.mc_samples != 1:
            raise ValueError(f"mc_samples={self.mc_samples} needs fisher_type 'mc', got {self.fisher_type!r}.")


class KroneckerEigenbasis:
    """Per module name: ``q_out [d_out, d_out]``, ``q_in [d_in, d_in]``
    (orthogonal, float64) and ``eigenvalues [d_out, d_in]`` (float64; K-FAC:
    outer product of the two factors' eigenvalues, EK-FAC: corrected
    eigenvalues). Modules are ordered as in ``module_names``, which fixes the
    layout of flat gradient vectors of length ``P = sum(d_out * d_in)``.
    """

    def __init__(
        self,
        module_names: Sequence[str],
        q_out: dict[str, Tensor],
        q_in: dict[str, Tensor],
        eigenvalues: dict[str, Tensor],
        settings: CurvatureSettings | None = None,
    ):
        self.module_names = list(module_names)
        self.q_out = {n: q_out[n].to(torch.float64) for n in self.module_names}
        self.q_in = {n: q_in[n].to(torch.float64) for n in self.module_names}
        self.eigenvalues = {n: eigenvalues[n].to(torch.float64) for n in self.module_names}
        self.settings = settings
        for name in self.module_names:
            d_out, d_in = self.eigenvalues[name].shape
            if self.q_out[name].shape != (d_out, d_out) or self.q_in[name].shape != (d_in, d_in):
                raise ValueError(
                    f"Module {name!r}: eigenvalues {tuple(self.eigenvalues[name].shape)} do not "
                    f"match q_out {tuple(self.q_out[name].shape)} / q_in {tuple(self.q_in[name].shape)}."
                )

    def num_params(self) -> int:
        """Number ``P`` of attributed parameters."""
        return sum(self.eigenvalues[n].numel() for n in self.module_names)

    def save(self, path) -> None:
        """Write plain CPU tensors plus metadata; atomic via a temporary sibling."""
        save_eigenbases(path, {self.settings.kind if self.settings else "kfac": self})

    @classmethod
    def load(cls, path, kind: str | None = None) -> KroneckerEigenbasis:
        """Read the ``kind`` basis (``"kfac"`` or ``"ekfac"``; None: the only
        one) of a file written by ``save_eigenbases`` (tensors land on the
        CPU); a file whose content does not match its stored checksum is
        refused."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CorruptedArtifactError(f"{path} cannot be read ({error}); delete it and rerun fit_curvature") from error
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved KroneckerEigenbasis.")
        if payload.pop("sha256", None) != state_digest(payload):
            raise CorruptedArtifactError(f"{path}: content does not match its checksum; delete it and rerun fit_curvature")
        kinds = sorted(payload["eigenvalues"])
        if kind is None and len(kinds) == 1:
            kind = kinds[0]
        if kind not in payload["eigenvalues"]:
            raise ValueError(f"{path} holds the {', '.join(kinds)} eigenvalues, not {kind!r}.")
        settings = payload["settings"]
        return cls(
            payload["module_names"],
            payload["q_out"],
            payload["q_in"],
            payload["eigenvalues"][kind],
            None if settings is None else CurvatureSettings(**{**settings, "kind": kind}),
        )

    def mean_eigenvalue(self) -> float:
        """Mean of all ``P`` eigenvalues, i.e. ``trace(F) / P``."""
        total = sum(self.eigenvalues[n].sum().item() for n in self.module_names)
        return total / self.num_params()

    def to(self, device) -> KroneckerEigenbasis:
        """The same basis with its tensors on ``device`` (moved once, not per use)."""
        q_out, q_in, eigenvalues = ({n: t.to(device) for n, t in part.items()} for part in (self.q_out, self.q_in, self.eigenvalues))
        return KroneckerEigenbasis(self.module_names, q_out, q_in, eigenvalues, self.settings)

    def module_slices(self) -> list[tuple[str, slice]]:
        """(module name, its columns in a flat ``[B, P]`` gradient), in order."""
        slices, offset = [], 0
        for name in self.module_names:
            size = self.eigenvalues[name].numel()
            slices.append((name, slice(offset, offset + size)))
            offset += size
        return slices

    def rotate(self, name: str, grads: Tensor) -> Tensor:
        """Module ``name``'s gradients ``[B, d_out * d_in]`` (its columns of a
        flat gradient) in its eigenbasis, ``R = Q_out^T W Q_in`` flattened
        row-major: ``[B, d_out * d_in]`` float64 on ``grads.device``."""
        d_out, d_in = self.eigenvalues[name].shape
        q_out = self.q_out[name].to(grads.device)
        q_in = self.q_in[name].to(grads.device)
        w = grads.to(torch.float64).reshape(-1, d_out, d_in)
        return (q_out.T @ w @ q_in).reshape(-1, d_out * d_in)

    def inverse_eigenvalues(self, name: str, damping: float, device=None) -> Tensor:
        """``1 / (E + damping)`` of module ``name``, flattened like ``rotate``: ``[d_out * d_in]`` float64."""
        return (self.eigenvalues[name].to(device).reshape(-1) + damping).reciprocal()

    def solve(self, grads: Tensor, damping: float) -> Tensor:
        """``(F + damping I)^{-1} g`` for each row ``g`` of ``grads`` ``[B, P]``
        (any float dtype and device): ``[B, P]`` float64. Per module,
        ``Q_out (R / (E + damping)) Q_in^T`` with ``R`` from ``rotate``."""
        if grads.ndim != 2 or grads.shape[1] != self.num_params():
            raise ValueError(f"grads must have shape [B, {self.num_params()}], got {tuple(grads.shape)}.")
        out = torch.empty(grads.shape, dtype=torch.float64, device=grads.device)
        for name, columns in self.module_slices():
            d_out, d_in = self.eigenvalues[name].shape
            scaled = (self.rotate(name, grads[:, columns]) * self.inverse_eigenvalues(name, damping, grads.device)).reshape(-1, d_out, d_in)
            q_out, q_in = self.q_out[name].to(grads.device), self.q_in[name].to(grads.device)
            out[:, columns] = (q_out @ scaled @ q_in.T).reshape(len(grads), -1)
        return out


def save_eigenbases(path, bases: dict[str, KroneckerEigenbasis]) -> None:
    """Write bases that share their eigenvectors (K-FAC and EK-FAC of one
    fit: ``fit_kronecker_eigenbases``) to one file, with each kind's
    eigenvalues; atomic via a temporary sibling."""
    first = next(iter(bases.values()))
    settings = None if first.settings is None else {k: v for k, v in asdict(first.settings).items() if k != "kind"}
    payload = {
        "format": _FORMAT,
        "module_names": first.module_names,
        "settings": settings,
        "q_out": {n: t.cpu() for n, t in first.q_out.items()},
        "q_in": {n: t.cpu() for n, t in first.q_in.items()},
        "eigenvalues": {kind: {n: t.cpu() for n, t in basis.eigenvalues.items()} for kind, basis in bases.items()},
    }
    payload["sha256"] = state_digest(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _attributed_weights(model: nn.Module, module_names: Sequence[str]) -> list[nn.Parameter]:
    """Weights of the named ``Linear``/``Conv2d`` modules, in the given order."""
    if len(module_names) == 0:
        raise ValueError("module_names must not be empty.")
    if len(set(module_names)) != len(module_names):
        raise ValueError("module_names contains duplicates.")
    modules = dict(model.named_modules())
    weights = []
    for name in module_names:
        module = modules.get(name)
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise ValueError(f"Module {name!r} is not an nn.Linear or nn.Conv2d of the model.")
        weights.append(module.weight)
    return weights


def _require_2d_output(module: nn.Module, inputs, output) -> None:
    """Forward hook: curvlinops K-FAC would silently treat ``[B, ..., C]``
    outputs as several loss terms per example, and EK-FAC refuses them."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"The model must return a [B, D] tensor, got {shape}.")


def _eigh64(factor: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (clamped at 0: factors are PSD, negatives are round-off) and
    eigenvectors of a symmetric factor, computed in float64."""
    values, vectors = torch.linalg.eigh(factor.to(torch.float64))
    return values.clamp(min=0.0), vectors


def fit_kronecker_eigenbasis(model: nn.Module, module_names: list[str], data, settings: CurvatureSettings, **options) -> KroneckerEigenbasis:
    """The ``settings.kind`` basis of ``fit_kronecker_eigenbases``."""
    return fit_kronecker_eigenbases(model, module_names, data, settings, **options)[settings.kind]


def fit_kronecker_eigenbases(
    model: nn.Module,
    module_names: list[str],
    data,
    settings: CurvatureSettings,
    *,
    num_data: int | None = None,
    batch_size_fn=None,
    progressbar: bool = False,
) -> dict[str, KroneckerEigenbasis]:
    """Fit K-FAC, and EK-FAC if ``settings.kind`` is ``"ekfac"``, of the
    mean-MSE GGN over the named modules' weights. EK-FAC's eigenbasis is
    K-FAC's, from the same factors (the same data and Monte Carlo targets),
    so one fit gives both: ``{"kfac": ..., "ekfac": ...}``.

    Args:
        model: maps ``X`` (tensor or dict) to outputs ``[B, D]``.
        module_names: names (as in ``model.named_modules()``) of ``Linear`` /
            ``Conv2d`` modules; their order fixes the flat parameter layout.
        data: iterable of ``(X, y)`` with ``y [B, D]``; iterated several times.
        settings: see :class:`CurvatureSettings`.
        num_data: number of data points; counted from ``data`` if ``None``.
        batch_size_fn: ``X -> batch size``; required when ``X`` is a dict.
        progressbar: show curvlinops' progress bars.

    Returns:
        ``{kind: eigenbasis}`` on the model's device, all tensors float64.
    """
    weights = _attributed_weights(model, module_names)
    operator_class = {"kfac": KFACLinearOperator, "ekfac": EKFACLinearOperator}[settings.kind]

    # Gradients w.r.t. the weights are needed even if the caller froze them.
    saved_flags = [w.requires_grad for w in weights]
    hook = model.register_forward_hook(_require_2d_output)
    try:
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            operator = operator_class(
                model,
                nn.MSELoss(reduction="mean"),
                weights,
                data,
                progressbar=progressbar,
                check_deterministic=False,
                seed=settings.seed,
                fisher_type=settings.fisher_type,
                mc_samples=settings.mc_samples,
                kfac_approx=settings.kfac_approx,
                # Outputs are [B, D]: one loss term per data point. Passing it
                # saves curvlinops a pass over the data to infer it.
                num_per_example_loss_terms=1,
                separate_weight_and_bias=True,
                num_data=num_data,
                batch_size_fn=batch_size_fn,
            )
            operator.compute_kronecker_factors()
            state = operator.state_dict()
            q_out, q_in, eigenvalues = {}, {}, {}
            # On a CPU the eigendecompositions take most of a large model's
            # fit (the preset's 4608-wide input factors: 12 s each on 2 cores).
            for name in tqdm(module_names, desc="eigendecompositions", unit="module", file=sys.stderr, mininterval=30, disable=not progressbar):
                eig_in, q_in[name] = _eigh64(state["input_covariances"][name])
                eig_out, q_out[name] = _eigh64(state["gradient_covariances"][name])
                eigenvalues[name] = torch.outer(eig_out, eig_in)
            kfac_settings = CurvatureSettings(**{**asdict(settings), "kind": "kfac"})
            bases = {"kfac": KroneckerEigenbasis(module_names, q_out, q_in, eigenvalues, kfac_settings)}

            if settings.kind == "ekfac":
                # curvlinops would eigendecompose the factors in the model's
                # dtype; hand it the float64 eigenvectors instead (cast to the
                # model's dtype for its einsums). A non-empty eigenvector cache
                # makes compute_eigenvalue_correction skip its own eigh.
                dtype = weights[0].dtype
                for name in module_names:
                    operator._input_covariances_eigenvectors[name] = q_in[name].to(dtype)
                    operator._gradient_covariances_eigenvectors[name] = q_out[name].to(dtype)
                operator.compute_eigenvalue_correction()
                corrected = operator.state_dict()["corrected_eigenvalues"]
                # With separate_weight_and_bias the corrections are keyed by the
                # parameter's position in `weights`, shaped [d_out, d_in].
                ekfac = {name: corrected[name][position].to(torch.float64) for position, name in enumerate(module_names)}
                bases["ekfac"] = KroneckerEigenbasis(module_names, q_out, q_in, ekfac, settings)
    finally:
        hook.remove()
        for w, flag in zip(weights, saved_flags):
            w.requires_grad_(flag)

    return bases
