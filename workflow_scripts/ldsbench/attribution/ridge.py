"""The ridge solver of TRAK, D-TRAK, Journey-TRAK and DAS: (G + lambda I)^{-1}
for G = Phi^T Phi, the Gram matrix of training features Phi [N, k].

A benchmark sweeps several ``lambda``. Refitting per value would repeat an
``O(k^3)`` solve; instead ``G = V diag(e) V^T`` is diagonalised once
(``GramSpectrum``) and every ``lambda`` is a reweighting
``diag(1 / (e + lambda))`` in that eigenbasis. When ``k > N`` the thin SVD
``Phi = U S V^T`` gives the same eigenvectors for the non-zero spectrum at
lower cost, and the null space it drops is orthogonal to every training
feature. Where the rows are fewer than the features and the right-hand sides
are not training features (DAS), ``RidgeSolver`` works in sample space by
Woodbury instead.

``lambda = 0`` with a singular G: the Moore-Penrose pseudo-inverse, i.e.
eigenvalues at or below ``rtol * max(e)`` are dropped (default ``rtol = k *
float64 eps``). ``lambda_scale: mean_eigenvalue`` reads a configured lambda
in units of ``trace(G) / k`` (``GramSpectrum.mean_eigenvalue``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ldsbench.spec.schema import defs_enum

_EPS64 = torch.finfo(torch.float64).eps
#: How a configured lambda is read (the schema's ``$defs/lambda_scale``).
LAMBDA_SCALES = defs_enum("lambda_scale")


def accumulate_gram(train_feature_batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum of ``Phi_b^T Phi_b`` over batches ``Phi_b`` of shape ``[N_b, k]``.

    Accumulates in float64 (on the device of the first batch) so that summing
    many float32 batches does not lose precision.

    Returns:
        ``[k, k]`` float64 Gram matrix ``Phi^T Phi`` of the concatenated batches.
    """
    gram: torch.Tensor | None = None
    for b, batch in enumerate(train_feature_batches):
        check_matrix(f"train feature batch {b}", batch)
        if gram is None:
            k = batch.shape[1]
            gram = torch.zeros(k, k, dtype=torch.float64, device=batch.device)
        elif batch.shape[1] != gram.shape[0]:
            raise ValueError(f"train feature batch {b} has {batch.shape[1]} features, earlier batches have {gram.shape[0]}")
        phi = batch.to(device=gram.device, dtype=torch.float64)
        gram.addmm_(phi.T, phi)
    if gram is None:
        raise ValueError("train_feature_batches is empty; cannot build a Gram matrix")
    return gram


@dataclass(frozen=True)
class GramSpectrum:
    """Eigendecomposition of ``Phi^T Phi``, reusable for any lambda and batch.

    Attributes:
        eigenvalues: ``[r]`` float64, clamped to ``>= 0``.
        eigenvectors: ``[k, r]`` float64, orthonormal columns.  ``r = k`` from
            a Gram matrix; ``r = min(N, k)`` from features with ``k > N``,
            where the omitted directions have eigenvalue 0 and are orthogonal
            to every training feature.
        rtol: relative cut-off used for the pseudo-inverse at ``lambda = 0``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    rtol: float

    @property
    def num_features(self) -> int:
        """``k``, the feature dimension."""
        return self.eigenvectors.shape[0]

    @property
    def mean_eigenvalue(self) -> float:
        """``trace(Phi^T Phi) / k``: the mean over all k eigenvalues,
        including those a thin SVD omits (they are 0)."""
        return float(self.eigenvalues.sum()) / self.num_features

    @classmethod
    def from_gram(cls, gram: torch.Tensor, rtol: float | None = None) -> GramSpectrum:
        """Diagonalise a symmetric PSD ``[k, k]`` Gram matrix (e.g. from ``accumulate_gram``)."""
        check_matrix("gram", gram)
        if gram.shape[0] != gram.shape[1]:
            raise ValueError(f"gram must be square, got shape {list(gram.shape)}")
        gram = gram.to(torch.float64)
        # Symmetrise: accumulated round-off can leave it slightly asymmetric.
        eigenvalues, eigenvectors = torch.linalg.eigh((gram + gram.T) / 2)
        return cls._build(eigenvalues, eigenvectors, rtol)

    @classmethod
    def from_features(cls, train_features: torch.Tensor, rtol: float | None = None) -> GramSpectrum:
        """Spectrum of ``Phi^T Phi`` from ``Phi`` (``[N, k]``) directly.

        Uses the eigendecomposition of the ``[k, k]`` Gram matrix when
        ``k <= N`` and the thin SVD of ``Phi`` when ``k > N`` (cheaper, and the
        Gram matrix would have rank at most N anyway).
        """
        check_matrix("train_features", train_features)
        n, k = train_features.shape
        if k <= n:
            return cls.from_gram(accumulate_gram([train_features]), rtol=rtol)
        phi = train_features.to(torch.float64)
        _, singular_values, vh = torch.linalg.svd(phi, full_matrices=False)
        return cls._build(singular_values.square(), vh.T, rtol, num_features=k)

    @classmethod
    def _build(
        cls,
        eigenvalues: torch.Tensor,
        eigenvectors: torch.Tensor,
        rtol: float | None,
        num_features: int | None = None,
    ) -> GramSpectrum:
        k = num_features if num_features is not None else eigenvectors.shape[0]
        if rtol is None:
            rtol = k * _EPS64
        elif not (math.isfinite(rtol) and rtol >= 0):
            raise ValueError(f"rtol must be a finite float >= 0, got {rtol!r}")
        if not torch.isfinite(eigenvalues).all():
            raise ValueError("Phi^T Phi has non-finite eigenvalues; check features for NaN/inf")
        # Phi^T Phi is PSD; negative eigenvalues are round-off.
        return cls(eigenvalues.clamp(min=0.0), eigenvectors, float(rtol))

    def inverse_eigenvalues(self, lam: float) -> torch.Tensor:
        """``[r]`` float64 diagonal of ``(Phi^T Phi + lam I)^{-1}`` in the eigenbasis.

        At ``lam = 0`` eigenvalues at or below ``rtol * max(e)`` get weight 0
        (pseudo-inverse); otherwise the weight is ``1 / (e + lam)``.
        """
        shifted = self.eigenvalues + lam
        if lam > 0:
            return shifted.reciprocal()
        cutoff = self.rtol * float(self.eigenvalues.max()) if self.eigenvalues.numel() else 0.0
        keep = self.eigenvalues > cutoff
        return torch.where(keep, shifted, torch.ones_like(shifted)).reciprocal() * keep

    def kernel_scores(
        self,
        query_features: torch.Tensor,
        train_features: torch.Tensor,
        lambdas: Sequence[float],
    ) -> torch.Tensor:
        """Kernel scores of queries against (a batch of) training examples.

        Args:
            query_features: ``[Q, k]``.
            train_features: ``[N_b, k]``; any subset of the training set, so
                large sets can be scored batch by batch.
            lambdas: ``L`` absolute ridge values ``>= 0``.

        Returns:
            ``[L, Q, N_b]`` float64 on the spectrum's device.
        """
        lambdas = check_lambdas(lambdas)
        k = self.num_features
        for name, features in (("query_features", query_features), ("train_features", train_features)):
            check_matrix(name, features)
            if features.shape[1] != k:
                raise ValueError(f"{name} has {features.shape[1]} features, expected k={k}")

        basis = self.eigenvectors
        # Coordinates in the eigenbasis: [Q, r] and [N_b, r].
        query_coords = query_features.to(device=basis.device, dtype=torch.float64) @ basis
        train_coords = train_features.to(device=basis.device, dtype=torch.float64) @ basis
        # [L, r] weights, then one batched matmul: [L, Q, r] @ [r, N_b].
        weights = torch.stack([self.inverse_eigenvalues(lam) for lam in lambdas])
        return (query_coords.unsqueeze(0) * weights.unsqueeze(1)) @ train_coords.T


def check_matrix(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {list(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {value.dtype}")


def check_lambdas(lambdas: Sequence[float]) -> list[float]:
    if isinstance(lambdas, torch.Tensor):
        lambdas = lambdas.reshape(-1).tolist()
    if isinstance(lambdas, (int, float, str)):
        # A bare number would silently yield [1, Q, N]; make the caller say so.
        raise ValueError(f"lambdas must be a sequence of floats, got {lambdas!r}")
    values = [float(lam) for lam in lambdas]
    if not values:
        raise ValueError("lambdas is empty; give at least one value")
    for lam in values:
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"lambdas must be finite and >= 0, got {lam!r}")
    return values


class RidgeSolver:
    """Applies (G + lam I)^{-1} to rows of a matrix, G = A^T A.

    From the Gram matrix G [k, k] (one eigendecomposition, ``trak.
    GramSpectrum``), or from the rows A [R, k] themselves in sample space
    when R <= k (always without projection, where k = P): with A A^T = U diag(e) U^T, Woodbury gives
    (A^T A + lam I)^{-1} x = x / lam - A^T U diag(1 / (lam (e + lam))) U^T A x
    for lam > 0, and the pseudo-inverse A^T U diag(1 / e^2) U^T A x at
    lam = 0 (eigenvalues at or below R * eps * max(e) dropped).
    """

    def __init__(self, spectrum: GramSpectrum | None = None, rows: torch.Tensor | None = None):
        self.spectrum, self.rows = spectrum, rows
        if rows is not None:
            eigenvalues, self.vectors = torch.linalg.eigh(rows @ rows.T)
            self.eigenvalues = eigenvalues.clamp(min=0.0)

    @classmethod
    def from_gram(cls, gram: torch.Tensor) -> RidgeSolver:
        return cls(spectrum=GramSpectrum.from_gram(gram))

    @classmethod
    def from_rows(cls, rows: torch.Tensor) -> RidgeSolver:
        return cls(rows=rows.double())

    @property
    def mean_eigenvalue(self) -> float:
        """trace(G) / k over the k feature dimensions (the ``lambda_scale`` unit)."""
        if self.spectrum is not None:
            return self.spectrum.mean_eigenvalue
        return float(self.eigenvalues.sum()) / self.rows.shape[1]

    def solve(self, rhs: torch.Tensor, lam: float) -> torch.Tensor:
        """rhs [N, k] -> [N, k] float64, row n = (G + lam I)^{-1} rhs_n."""
        if self.spectrum is not None:
            basis = self.spectrum.eigenvectors.to(rhs.device)
            return ((rhs @ basis) * self.spectrum.inverse_eigenvalues(lam).to(rhs.device)) @ basis.T
        rows, vectors, eigenvalues = self.rows.to(rhs.device), self.vectors.to(rhs.device), self.eigenvalues.to(rhs.device)
        coords = (rhs @ rows.T) @ vectors  # [N, R]: U^T A x per row
        if lam > 0:
            return rhs / lam - (coords / (lam * (eigenvalues + lam))) @ vectors.T @ rows
        cutoff = len(eigenvalues) * torch.finfo(torch.float64).eps * float(eigenvalues.max())
        keep = eigenvalues > cutoff
        weights = torch.where(keep, eigenvalues, torch.ones_like(eigenvalues)).pow(-2) * keep
        return (coords * weights) @ vectors.T @ rows


def fit_ridge_solver(blocks: Iterator[torch.Tensor], max_rows: float) -> RidgeSolver:
    """A solver for G = sum of the outer products of the rows in ``blocks``
    ([r, k] each): in sample space while there are at most ``max_rows`` rows
    (an R x R eigendecomposition), else from the k x k Gram matrix."""
    kept, total = [], 0
    for block in blocks:
        kept.append(block)
        total += len(block)
        if total > max_rows:
            return RidgeSolver.from_gram(accumulate_gram(itertools.chain(kept, blocks)))
    return RidgeSolver.from_rows(torch.cat(kept))
