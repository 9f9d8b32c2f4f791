"""A linear noise predictor whose retraining on any subset has a closed form.

The predictor is eps_hat(x_t, t) = W z(x_t, t) with ``W [D, Z]`` and features

    z(x_t, t) = [x_t ; sqrt(1 - abar_t) x_t ; sqrt(abar_t) ; sqrt(1 - abar_t) ; 1]

(``Z = 2 D + 3``, x_t flattened to ``[D]``): the products with sqrt(1 - abar_t)
let the gain from x_t to the predicted noise depend on the noise level, as
that of the optimal denoiser does. Each training example i comes with a
FIXED set of S draws (t_d, eps_d), and

    loss_i(W) = (1/S) sum_d (1/D) ||eps_d - W z(x_{t_d}, t_d)||^2,

the package's per-draw loss (``diffusion.simplified_loss``) averaged over
those draws. The training objective of a subset with weights w_i in {0, 1}
(all ones: the full set) is

    L_w(W) = (1/N) sum_i w_i loss_i(W) + (ridge / 2) ||W||_F^2.

Keeping 1/N (not 1/|S|) for every subset makes dropping example i exactly
the perturbation that first-order influence linearises; ``ridge`` is an
absolute damping in the same units as ``lambda`` of the influence formula.
L_w is quadratic, so its minimiser is ``W = B_w (K_w + ridge I)^{-1}`` with
``K_w = (2 / (N D)) sum_i w_i sum_d z z^T / S`` and ``B_w`` the same sum of
``eps z^T``. Its Hessian, with vec(W) row-major, is exactly ``I_D (x) (K_w +
ridge I)``: a single linear layer under a mean squared error has a Kronecker
GGN (= Hessian), which K-FAC and EK-FAC must reproduce exactly.

Influence with the exact Hessian of the full objective (SCORE_SIGN = -1):

    tau(q, i) = SCORE_SIGN (1/N) grad m(q)^T (H + lambda I)^{-1} grad loss_i,

where m(q) is the same per-draw loss averaged over fixed query draws.

All tensors are float64. Shapes: N training examples, Q queries, S draws per
item, image ``[C, H, W]`` with D = C H W pixels, Z = 2 D + 3 features,
T timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ldsbench.attribution.scoring import SCORE_SIGN
from ldsbench.diffusion.noise import noise_draws

__all__ = [
    "num_features",
    "noise_images",
    "features",
    "fixed_draws",
    "draw_features",
    "DrawStatistics",
    "draw_statistics",
    "fit",
    "example_losses",
    "example_gradients",
    "measure",
    "hessian_factor",
    "dense_hessian",
    "precondition",
    "influence_scores",
    "LinearDenoiser",
    "DenoiserOutput",
    "FixedDrawData",
]


def num_features(num_pixels: int) -> int:
    """Z = 2 D + 3."""
    return 2 * num_pixels + 3


def noise_images(x0: Tensor, noise: Tensor, timesteps: Tensor, abar: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, as ``diffusion.noised``.

    Args:
        x0: ``[B, C, H, W]``.
        noise: ``[B, C, H, W]``.
        timesteps: ``[B]`` int64 in ``[0, T)``.
        abar: ``[T]`` cumulative products of alphas (the scheduler's
            ``alphas_cumprod``).

    Returns:
        ``[B, C, H, W]`` in the dtype of ``x0``.
    """
    a = abar.to(device=x0.device, dtype=x0.dtype)[timesteps].view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def features(x_t: Tensor, timesteps: Tensor, abar: Tensor) -> Tensor:
    """z(x_t, t) = [x_t ; sqrt(1 - abar_t) x_t ; sqrt(abar_t) ; sqrt(1 - abar_t) ; 1].

    Args:
        x_t: ``[B, C, H, W]`` noised images.
        timesteps: ``[B]`` int64.
        abar: ``[T]``.

    Returns:
        ``[B, Z]`` with Z = 2 C H W + 3, in the dtype of ``x_t``.
    """
    flat = x_t.flatten(start_dim=1)
    a = abar.to(device=x_t.device, dtype=x_t.dtype)[timesteps].unsqueeze(1)  # [B, 1]
    s = (1 - a).sqrt()
    return torch.cat([flat, s * flat, a.sqrt(), s, torch.ones_like(a)], dim=1)


def fixed_draws(stream: int, items: Sequence[int], n_draws: int, shape: tuple, num_timesteps: int) -> tuple[Tensor, Tensor]:
    """Draws 0..S-1 of each item key under ``stream`` (``noise.noise_draws``).

    With the keys the package's gradient code uses for the same images
    (``noise.content_keys``) these are the draws whose gradients it computes,
    so a model trained on them is the one it differentiates.

    Args:
        stream: stream seed (``noise.stream_seed``).
        items: n item keys.
        n_draws: S.
        shape: ``(C, H, W)``.
        num_timesteps: T.

    Returns:
        timesteps ``[n, S]`` int64 and noise ``[n, S, C, H, W]`` float64.
    """
    draws = [noise_draws(stream, int(item), 0, n_draws, tuple(shape), num_timesteps) for item in items]
    return torch.stack([t for t, _ in draws]), torch.stack([e for _, e in draws]).double()


def draw_features(images: Tensor, timesteps: Tensor, noise: Tensor, abar: Tensor) -> tuple[Tensor, Tensor]:
    """Features and targets of every (item, draw) pair.

    Args:
        images: ``[n, C, H, W]``.
        timesteps: ``[n, S]``.
        noise: ``[n, S, C, H, W]``.
        abar: ``[T]``.

    Returns:
        z ``[n, S, Z]`` and targets eps ``[n, S, D]``, float64.
    """
    n, draws = timesteps.shape
    shape = tuple(images.shape[1:])
    x0 = images.double().unsqueeze(1).expand(n, draws, *shape).reshape(n * draws, *shape)
    eps = noise.double().reshape(n * draws, *shape)
    t = timesteps.reshape(-1)
    z = features(noise_images(x0, eps, t, abar), t, abar)
    return z.reshape(n, draws, -1), eps.reshape(n, draws, -1)


class DrawStatistics(NamedTuple):
    """Per-example second moments over the example's S draws (float64):
    ``zz [N, Z, Z]`` = mean_d z z^T, ``ez [N, D, Z]`` = mean_d eps z^T."""

    zz: Tensor
    ez: Tensor


def draw_statistics(z: Tensor, eps: Tensor) -> DrawStatistics:
    """z ``[N, S, Z]``, eps ``[N, S, D]`` -> :class:`DrawStatistics`."""
    draws = z.shape[1]
    return DrawStatistics(
        zz=torch.einsum("nsa,nsb->nab", z, z) / draws,
        ez=torch.einsum("nsd,nsb->ndb", eps, z) / draws,
    )


def hessian_factor(zz: Tensor, num_pixels: int, weights: Tensor | None = None) -> Tensor:
    """K = (2 / (N D)) sum_i w_i zz_i, with H = I_D (x) K the exact Hessian of
    (1/N) sum_i w_i loss_i for vec(W) row-major (the factor 2 is the MSE's).

    Args:
        zz: ``[N, Z, Z]`` (``DrawStatistics.zz``).
        num_pixels: D.
        weights: ``[N]`` (default all ones).

    Returns:
        ``[Z, Z]``.
    """
    n = zz.shape[0]
    w = torch.ones(n, dtype=zz.dtype) if weights is None else weights.to(zz.dtype)
    return 2.0 / (n * num_pixels) * torch.einsum("n,nab->ab", w, zz)


def dense_hessian(factor: Tensor, num_pixels: int) -> Tensor:
    """``[D Z, D Z]`` matrix I_D (x) K, in the row-major layout of ``W [D, Z]``
    (the layout of ``Linear.weight.reshape(-1)``); for small checks only."""
    return torch.kron(torch.eye(num_pixels, dtype=factor.dtype), factor)


def fit(stats: DrawStatistics, weights: Tensor, ridge: float) -> Tensor:
    """Minimiser of L_w(W) = (1/N) sum_i w_i loss_i(W) + (ridge / 2) ||W||_F^2.

    Setting the gradient (2 / (N D)) sum_i w_i (W zz_i - ez_i) + ridge W to 0
    gives W (K_w + ridge I) = B_w with B_w = (2 / (N D)) sum_i w_i ez_i.

    Args:
        stats: per-example moments, ``zz [N, Z, Z]``, ``ez [N, D, Z]``.
        weights: ``[N]`` (0/1 subset membership, or any nonnegative weights).
        ridge: absolute regulariser (0 for plain least squares).

    Returns:
        ``W [D, Z]``.
    """
    n, num_pixels = stats.zz.shape[0], stats.ez.shape[1]
    w = weights.to(stats.zz.dtype)
    k = hessian_factor(stats.zz, num_pixels, w)
    b = 2.0 / (n * num_pixels) * torch.einsum("n,ndb->db", w, stats.ez)
    system = k + ridge * torch.eye(k.shape[0], dtype=k.dtype)
    # K is symmetric: W = B K^{-1} <=> K W^T = B^T.
    return torch.linalg.solve(system, b.T).T


def example_losses(weight: Tensor, z: Tensor, eps: Tensor) -> Tensor:
    """Per-item loss: mean over draws and pixels of (eps - W z)^2.

    Args:
        weight: ``W [D, Z]``.
        z: ``[n, S, Z]``.
        eps: ``[n, S, D]``.

    Returns:
        ``[n]``.
    """
    residual = eps - z @ weight.T
    return residual.pow(2).mean(dim=(1, 2))


def measure(weight: Tensor, z: Tensor, eps: Tensor) -> Tensor:
    """m(q): the per-draw loss averaged over the query's fixed draws.

    Args:
        weight: ``W [D, Z]`` or a stack ``[M, D, Z]`` of retrained weights.
        z: ``[Q, S, Z]`` query features.
        eps: ``[Q, S, D]`` query noise.

    Returns:
        ``[Q]``, or ``[M, Q]`` for stacked weights.
    """
    if weight.dim() == 2:
        return example_losses(weight, z, eps)
    residual = eps.unsqueeze(0) - torch.einsum("qsb,mdb->mqsd", z, weight)
    return residual.pow(2).mean(dim=(2, 3))


def example_gradients(weight: Tensor, z: Tensor, eps: Tensor) -> Tensor:
    """Gradient wrt W of each item's loss: (2 / (S D)) sum_d (W z_d - eps_d) z_d^T.

    Args:
        weight: ``W [D, Z]``.
        z: ``[n, S, Z]``.
        eps: ``[n, S, D]``.

    Returns:
        ``[n, D, Z]``.
    """
    draws, num_pixels = eps.shape[1], eps.shape[2]
    residual = z @ weight.T - eps  # [n, S, D]
    return 2.0 / (draws * num_pixels) * torch.einsum("nsd,nsb->ndb", residual, z)


def precondition(grads: Tensor, factor: Tensor, damping: float) -> Tensor:
    """(H + damping I)^{-1} g for H = I_D (x) K: each ``g [D, Z]`` maps to
    g (K + damping I)^{-1} (exact, as H is exactly Kronecker).

    Args:
        grads: ``[B, D, Z]``.
        factor: K ``[Z, Z]`` (symmetric).
        damping: absolute damping lambda.

    Returns:
        ``[B, D, Z]``.
    """
    system = factor + damping * torch.eye(factor.shape[0], dtype=factor.dtype)
    batch, num_pixels, width = grads.shape
    solved = torch.linalg.solve(system, grads.reshape(batch * num_pixels, width).T).T
    return solved.reshape(batch, num_pixels, width)


def influence_scores(query_grads: Tensor, train_grads: Tensor, factor: Tensor, damping: float) -> Tensor:
    """tau(q, i) = SCORE_SIGN (1/N) grad m(q)^T (H + damping I)^{-1} grad loss_i.

    Args:
        query_grads: ``[Q, D, Z]`` gradients of m(q) at the full-data optimum.
        train_grads: ``[N, D, Z]`` gradients of loss_i there.
        factor: K ``[Z, Z]`` of the full objective's Hessian I_D (x) K.
        damping: absolute damping lambda.

    Returns:
        ``[Q, N]``: the predicted m(with i) - m(without i).
    """
    solved = precondition(query_grads, factor, damping)
    return SCORE_SIGN * torch.einsum("qdb,ndb->qn", solved, train_grads) / train_grads.shape[0]


class DenoiserOutput(NamedTuple):
    """Mirrors ``UNet2DOutput``: ``sample [B, C, H, W]`` is the predicted noise."""

    sample: Tensor


class LinearDenoiser(nn.Module):
    """eps_hat = W z(x_t, t) as a module with the UNet's call signature
    ``(sample [B, C, H, W], timestep [B]) -> DenoiserOutput``, so that the
    package's gradient, curvature and scoring code runs on it unchanged.

    The only attributed weight is ``linear.weight`` = W ``[D, Z]``
    (an ``nn.Linear`` without bias acting on z).
    """

    def __init__(self, abar: Tensor, image_shape: tuple, weight: Tensor | None = None):
        super().__init__()
        num_pixels = 1
        for size in image_shape:
            num_pixels *= int(size)
        self.image_shape = tuple(image_shape)
        self.register_buffer("abar", abar.detach().clone().double())
        self.linear = nn.Linear(num_features(num_pixels), num_pixels, bias=False, dtype=torch.float64)
        if weight is not None:
            with torch.no_grad():
                self.linear.weight.copy_(weight)

    def forward(self, sample: Tensor, timestep: Tensor) -> DenoiserOutput:
        z = features(sample, timestep, self.abar)
        return DenoiserOutput(self.linear(z).view_as(sample))


class FixedDrawData:
    """Re-iterable ``(X, y)`` batches over all N S (example, draw) pairs in the
    format of ``curvature_data.NoisedTrainingData`` (X = {"sample": x_t
    [B, C, H, W], "timestep": t [B]}, y = eps [B, D]), but over given draws,
    so that the curvature is that of the objective the closed form minimises.

    Args:
        images: ``[N, C, H, W]``.
        timesteps: ``[N, S]``.
        noise: ``[N, S, C, H, W]``.
        abar: ``[T]``.
        batch_size: pairs per batch.
    """

    def __init__(self, images: Tensor, timesteps: Tensor, noise: Tensor, abar: Tensor, batch_size: int = 512):
        n, draws = timesteps.shape
        shape = tuple(images.shape[1:])
        x0 = images.double().unsqueeze(1).expand(n, draws, *shape).reshape(n * draws, *shape)
        self.noise = noise.double().reshape(n * draws, *shape)
        self.timesteps = timesteps.reshape(-1)
        self.x_t = noise_images(x0, self.noise, self.timesteps, abar)
        self.batch_size = batch_size

    @property
    def num_data(self) -> int:
        return len(self.timesteps)

    def __iter__(self):
        for first in range(0, self.num_data, self.batch_size):
            rows = slice(first, first + self.batch_size)
            yield {"sample": self.x_t[rows], "timestep": self.timesteps[rows]}, self.noise[rows].flatten(start_dim=1)
