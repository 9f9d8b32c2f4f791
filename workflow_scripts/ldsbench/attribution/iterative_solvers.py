"""Iterative solves with the exact GGN: block preconditioned conjugate
gradients, and the GGN of the training loss as a matrix-matrix product.

``block_pcg`` solves ``A X = B`` for a symmetric positive definite ``A``
given only as a product ``matmat(V [P, K]) -> A V [P, K]``, for all K
right-hand sides at once: K independent CG recurrences that share every
product with ``A`` (the columns still iterating are multiplied together), so
one pass over the data serves every right-hand side. A column stops when its
relative residual ``||b - A x|| / ||b||`` reaches ``tolerance``.

``GGNMatmat`` is the exact generalized Gauss-Newton of the mean squared
error over the model's flattened outputs ``[B, D]``,

    G = (2 / (n D)) sum_{data points j} J_j^T J_j,

over the n data points of ``data`` (``curvature_data.NoisedTrainingData``:
the (x_t, t, eps) draws the K-FAC fit of ``curvature`` uses), restricted to
the weights of the named ``Linear``/``Conv2d`` modules in the flat layout of
``curvature.KroneckerEigenbasis`` (modules in order, each weight flattened
row-major). That is the matrix curvlinops' ``GGNLinearOperator`` represents
for ``MSELoss(reduction="mean")``, and the one K-FAC and EK-FAC approximate.
curvlinops 3.0.1 computes ``J v`` by forward-mode differentiation, which the
diffusers UNet does not support (``group_norm``'s forward-mode derivative
fails on the non-contiguous tangents, and the CPU flash attention kernel has
none); here ``J v`` is the derivative in ``u`` of ``v^T J^T u``
(reverse-over-reverse), with attention on its differentiable ``math``
backend. Per batch, one forward pass and one first-order backward pass with
its graph are shared by the K columns; each column then costs one
double-backward pass for ``J v`` and one backward pass for ``J^T (J v)``.
The tests check it against curvlinops' ``GGNLinearOperator`` on models where
that runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ldsbench.attribution.curvature import _attributed_weights


@dataclass(frozen=True)
class SolveInfo:
    """What ``block_pcg`` did: ``iterations`` products with ``A`` after the
    start (the largest over the columns), per column ``[K]`` the iterations it
    took and its final relative residual ``||b - A x|| / ||b||`` (0 for
    ``b = 0``), and whether every column reached the tolerance."""

    iterations: int
    column_iterations: Tensor
    relative_residuals: Tensor
    converged: bool


def block_pcg(
    matmat: Callable[[Tensor], Tensor],
    rhs: Tensor,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    *,
    tolerance: float = 1e-6,
    max_iterations: int = 100,
    start: Tensor | None = None,
    on_iteration: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, SolveInfo]:
    """Solve ``A X = B`` by preconditioned conjugate gradients, column by column
    with shared products.

    Args:
        matmat: ``V [P, k] -> A V [P, k]`` for a symmetric positive definite
            ``A`` (any k <= K: only the columns still iterating are passed).
        rhs: ``B [P, K]``.
        preconditioner: ``R [P, k] -> M^{-1} R [P, k]``, ``M`` symmetric
            positive definite; None: the identity.
        tolerance: a column stops once ``||b - A x|| <= tolerance ||b||``.
        max_iterations: products with ``A`` after the start, at most (0: the
            start is returned, with its residual).
        start: ``X_0 [P, K]``; None: zeros (then the first product is
            the first iteration's, and no product is spent on the residual).
        on_iteration: called after each iteration with its number and the
            relative residuals ``[K]`` (progress for long solves).

    Returns:
        ``X [P, K]`` in the dtype of ``rhs`` and a :class:`SolveInfo`. The
        residual is the recurrence's, which equals ``b - A x`` up to round-off.
    """
    if rhs.ndim != 2:
        raise ValueError(f"rhs must be [P, K], got {tuple(rhs.shape)}")
    if max_iterations < 0 or tolerance < 0:
        raise ValueError("max_iterations and tolerance must be nonnegative")
    precondition = (lambda r: r) if preconditioner is None else preconditioner
    n_columns = rhs.shape[1]
    b_norm = rhs.norm(dim=0)
    if start is None:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
    else:
        x = start.to(rhs.dtype).clone()
        r = rhs - matmat(x)
    done_iterations = torch.zeros(n_columns, dtype=torch.long)

    def relative(res: Tensor, columns) -> Tensor:
        norm, scale = res.norm(dim=0), b_norm[columns]
        return torch.where(scale > 0, norm / torch.where(scale > 0, scale, 1), norm)

    residuals = relative(r, slice(None))
    active = torch.nonzero(residuals > tolerance).flatten()
    if len(active) and max_iterations:
        p = precondition(r[:, active])
        rz = (r[:, active] * p).sum(dim=0)
    iteration = 0
    while len(active) and iteration < max_iterations:
        iteration += 1
        ap = matmat(p)
        alpha = rz / (p * ap).sum(dim=0)
        x[:, active] += alpha * p
        r_active = r[:, active] - alpha * ap
        r[:, active] = r_active
        done_iterations[active] += 1
        residuals[active] = relative(r_active, active)
        if on_iteration is not None:
            on_iteration(iteration, residuals)
        keep = residuals[active] > tolerance
        if not keep.any():
            break
        active, r_active, p = active[keep], r_active[:, keep], p[:, keep]
        z = precondition(r_active)
        rz_new = (r_active * z).sum(dim=0)
        p = z + (rz_new / rz[keep]) * p
        rz = rz_new
    info = SolveInfo(
        iterations=int(done_iterations.max()) if n_columns else 0,
        column_iterations=done_iterations,
        relative_residuals=residuals,
        converged=bool((residuals <= tolerance).all()),
    )
    return x, info


class GGNMatmat:
    """``V [P, K] -> G V [P, K]``: the exact GGN of the mean-MSE loss of
    ``model`` (``X -> [B, D]``, e.g. ``model.FlatNoisePredictor``) over
    ``data`` (re-iterable ``(X, y)`` batches, ``y [B, D]``), restricted to
    the weights of ``module_names`` in their flat layout.

    ``num_data`` (counted from ``data`` if None) is n; ``batch_size_fn`` maps
    ``X`` to its batch size (required when ``X`` is a dict). The model's
    weights are used as they are (their dtype is the products' dtype: a
    float64 copy gives float64 products); ``V`` may be of any float dtype and
    device, the result has ``V``'s. ``passes`` counts the batches' draws
    multiplied (for logs and tests).
    """

    def __init__(self, model: nn.Module, module_names: Sequence[str], data, *, num_data: int | None = None, batch_size_fn=None):
        self.model, self.data = model, data
        self.weights = _attributed_weights(model, module_names)
        self.sizes = [w.numel() for w in self.weights]
        self.batch_size_fn = batch_size_fn or (lambda inputs: inputs.shape[0])
        self.num_data = num_data if num_data is not None else sum(self.batch_size_fn(inputs) for inputs, _ in data)
        self.draws_multiplied = 0

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def __call__(self, vectors: Tensor) -> Tensor:
        if vectors.ndim != 2 or vectors.shape[0] != self.num_params:
            raise ValueError(f"vectors must be [{self.num_params}, K], got {tuple(vectors.shape)}")
        dtype = self.weights[0].dtype
        columns = [[part.reshape(w.shape) for part, w in zip(torch.split(v.to(self.weights[0].device, dtype), self.sizes), self.weights)] for v in vectors.T]
        out = torch.zeros(vectors.shape[::-1], dtype=dtype, device=self.weights[0].device)  # [K, P]
        flags = {p: p.requires_grad for p in self.model.parameters()}
        try:
            for p in self.model.parameters():
                p.requires_grad_(False)
            for w in self.weights:
                w.requires_grad_(True)
            with torch.enable_grad(), _differentiable_attention():
                for inputs, _ in self.data:
                    outputs = self.model(inputs)  # [b, D]
                    scale = 2.0 / (self.num_data * outputs.shape[1])
                    dual = torch.zeros_like(outputs, requires_grad=True)
                    transposed = torch.autograd.grad(outputs, self.weights, dual, create_graph=True)  # J^T u, linear in u
                    for index, column in enumerate(columns):
                        (jv,) = torch.autograd.grad(transposed, dual, column, retain_graph=True)  # J v  [b, D]
                        product = torch.autograd.grad(outputs, self.weights, jv, retain_graph=True)  # J^T J v
                        out[index] += scale * torch.cat([g.reshape(-1) for g in product])
                    self.draws_multiplied += len(outputs) * len(columns)
                    del outputs, dual, transposed
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
        return out.T.to(vectors.device, vectors.dtype)


def _differentiable_attention():
    """Scaled dot-product attention on its ``math`` backend, whose products are
    twice differentiable (the fused CPU and GPU kernels' backward passes are not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
