"""Rows of the output Jacobian of the noise prediction, J^T v: vector-Jacobian
products of eps_theta(x_t, t) [C, H, W] with respect to the attributed
weights, for the standard basis (the exact Jacobian) or random orthonormal
directions (a sketch whose outer products are unbiased for J^T J). DAS
builds its curvature and its scores from them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import torch

from ldsbench.diffusion.model import attributed_modules
from ldsbench.diffusion.noise import GradientDraws, as_gradient_draws, content_key
from ldsbench.diffusion.outputs import noised
from ldsbench.runtime.seeds import stream_seed


def draw_directions(stream: int, item: int, start: int, count: int, shape: tuple, n_directions: int | None) -> torch.Tensor:
    """Output directions of draws ``start .. start+count-1`` of one item: [count, S, *shape] float32.

    ``n_directions`` None: the D standard basis vectors (S = D, exact
    Jacobian). An int S <= D: sqrt(D) times S orthonormal vectors, uniformly
    random (QR of a Gaussian matrix, signs fixed), a pure function of
    (stream, item, draw). Then (1/S) sum_s v_s v_s^T has expectation I, and
    at S = D it is exactly I: the sketch becomes the exact Jacobian.
    """
    shape = tuple(shape)
    dim = math.prod(shape)
    if n_directions is None:
        return torch.eye(dim).reshape(1, dim, *shape).expand(count, dim, *shape)
    if n_directions > dim:
        raise ValueError(f"output_directions must be at most the output size {dim}, got {n_directions}")
    vectors = []
    for draw in range(start, start + count):
        generator = torch.Generator().manual_seed(stream_seed(stream, item, draw, "direction"))
        gaussian = torch.randn(dim, n_directions, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r))  # the unique Haar-distributed factor
        vectors.append((math.sqrt(dim) * q.T).float().reshape(n_directions, *shape))
    return torch.stack(vectors)


def output_vjps(unet, scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Vector-Jacobian products of the predicted noise: [B, S, P].

    Row (b, s) is J_b^T v_{b,s}, the gradient of <v_{b,s}, eps_theta(x_t, t_b)>
    with x_t = ``diffusion.noised``(x0_b, noise_b, t_b), with respect to the
    attributed weights (``model.attributed_parameters`` order, flattened).
    x0, noise [B, C, H, W], timesteps [B], directions [B, S, C, H, W].
    """
    names = [f"{name}.weight" for name, _ in attributed_modules(unet)]
    parameters = dict(unet.named_parameters())
    weights = {name: parameters[name].detach() for name in names}
    x_t = noised(scheduler, x0, noise, timesteps)

    def rows(x, t, v):
        def predicted_noise(w):
            return torch.func.functional_call(unet, w, (x.unsqueeze(0), t.unsqueeze(0))).sample.squeeze(0)

        _, pullback = torch.func.vjp(predicted_noise, weights)
        (grads,) = torch.func.vmap(pullback)(v.to(x.dtype))
        return torch.cat([grads[name].reshape(v.shape[0], -1) for name in names], dim=1)

    # torch.func differentiates through an outer no_grad; it only keeps
    # ordinary autograd from recording the unattributed parameters.
    with warnings.catch_warnings(), torch.no_grad():
        # Attention's CPU backward has no batching rule: slower, still exact.
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        return torch.func.vmap(rows)(x_t, timesteps, directions)


def jacobian_row_chunks(
    unet, scheduler, images: torch.Tensor, n_draws: int | GradientDraws, n_directions: int | None, stream: int, max_rows: int = 256
) -> Iterator[tuple[int, torch.Tensor]]:
    """Scaled Jacobian rows of every image [N, C, H, W]: yields (row of the image, rows [r, P]).

    The rows of image i are J_{i,d}^T v_{i,d,s} / sqrt(n_draws S) for random
    directions (/ sqrt(n_draws) for the exact basis), so that the sum of
    their outer products estimates E_d J_{i,d}^T J_{i,d} (exactly, for the
    basis). Draws are ``noise.GradientDraws.draws`` (``n_draws``: a count
    of uniform draws, or their layout) keyed by (stream,
    ``noise.content_key``(image)): they depend neither on the row of the
    image nor on ``max_rows`` (at most max(max_rows, 1) rows per chunk, a
    memory bound).
    """
    plan = as_gradient_draws(n_draws)
    n_draws = plan.count
    unet.eval()
    shape, num_timesteps = tuple(images.shape[1:]), scheduler.config.num_train_timesteps
    count_directions = math.prod(shape) if n_directions is None else n_directions
    scale = 1.0 / math.sqrt(n_draws if n_directions is None else n_draws * count_directions)
    per_pass = max(1, max_rows // count_directions)
    direction_chunk = max(1, max_rows)
    for row, image in enumerate(images):
        key = content_key(image)
        for start in range(0, n_draws, per_pass):
            count = min(per_pass, n_draws - start)
            timesteps, noise = plan.draws(stream, key, start, count, shape, num_timesteps)
            directions = draw_directions(stream, plan.item(key), start, count, shape, n_directions)
            x0 = image.unsqueeze(0).expand(count, *shape)
            noise, timesteps = noise.to(image.device, image.dtype), timesteps.to(image.device)
            for first in range(0, count_directions, direction_chunk):
                v = directions[:, first : first + direction_chunk].to(image.device, image.dtype)
                vjps = output_vjps(unet, scheduler, x0, noise, timesteps, v)
                yield row, vjps.reshape(-1, vjps.shape[-1]) * scale
