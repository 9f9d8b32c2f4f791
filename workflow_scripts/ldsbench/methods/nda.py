"""Nonparametric data attribution (NDA; Zhao et al. 2025, arXiv 2510.14269,
sail-sg/NDA ``CIFAR2/nda_single_scale.py`` and ``CIFAR2/nda_twoscale.py``):
no model and no gradient, only the images and the noise schedule.

The query x is noised to a fixed timestep t, x_t = s x + sigma eps with
s = sqrt(abar_t), sigma = sqrt(1 - abar_t), and each training image y_i gets
its posterior weight under the empirical optimal denoiser (the denoiser a
diffusion model trained to zero loss on the training set would be),

    w_i = softmax_i( -|x_t - s y_i|^2 / (2 sigma^2) ).

**Patches** (``patch`` p, the authors' default): the same softmax for every
p x p patch of x_t, over every training image *and* every patch position
(a softmax over N x positions); each image's weight is the sum of its
weights over positions (or of its ``topk`` largest), summed over the
query's patches. Both images are padded by (p - 1) // 2 with ``mask_value``
(their code pads x_t with 0 and adds the mask value to invalid entries, and
pads s y the same way), so patches past an edge match only patches past the
same edge. An even p gives H + 2 ((p - 1) // 2) - p + 1 positions per side.

**Two scales** (``two_scale``, their ``nda_twoscale.py``): alpha times the
patch weights plus (1 - alpha) times the weights of a second, larger patch
size p_d compared after 2 x 2 block pooling (their projection matrix
``get_projection_matrix_crop(p_d, p_d / 2)``: each 2 x 2 block summed and
halved, an orthonormal projection), i.e. distances |P x_patch - P y_patch|^2.

The noise is the authors': one draw per timestep, shared by every query
(they re-seed with ``e_seed * 1000 + t`` before each query), here seeded
``seed * 1000 + t`` (+ 1_000_003 per further draw when ``draws`` > 1, this
benchmark's option, which averages the weights).

Orientation: the weights are a similarity (larger: more alike), made a
score tau by the measurement's orientation exactly as pixel similarity
(``similarity.similarity_to_scores``): -w for a lower-is-better measurement,
+w for a higher-is-better one, the method's ``sign`` for a measurement that
is not a quality measure.

Cost and memory (docs/methods.md, "NDA"): no forward or backward pass. Per
timestep, draw and query, one convolution of the padded training set with
the query's patches, Q x N x C x H W x p^2 multiply-adds (x 2 with two
scales). Peak: the padded training set, N C (H + p - 1)^2 values, plus one
block of ``kernel_batch`` query patches' distances and softmax,
2 x kernel_batch x N x H W values (float32 for float32 images), e.g.
2 x 16 x 5000 x 1024 x 4 bytes = 655 MB on CIFAR-2.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ldsbench.methods.similarity import signed_per_measurement
from ldsbench.spec.method_types import scored_values

#: Seed stride between the shared noise draws of one timestep.
DRAW_SEED_STRIDE = 1_000_003


def _pad(images: torch.Tensor, patch: int, mask_value: float) -> torch.Tensor:
    """Images padded by (patch - 1) // 2 on every side with ``mask_value``."""
    pad = (patch - 1) // 2
    return F.pad(images, (pad, pad, pad, pad), value=mask_value)


def _patch_kernels(image: torch.Tensor, patch: int, mask_value: float) -> torch.Tensor:
    """[positions, C, p, p]: every p x p patch of one padded image [C, H, W]."""
    channels = image.shape[0]
    padded = _pad(image[None], patch, mask_value)
    return F.unfold(padded, kernel_size=patch).transpose(1, 2).reshape(-1, channels, patch, patch)


def _block_pool(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H - 1, W - 1]: the sum of every 2 x 2 block, halved (the
    authors' projection of one 2 x 2 block, at every offset)."""
    channels = images.shape[1]
    return F.conv2d(images, images.new_full((channels, 1, 2, 2), 0.5), groups=channels)


def _accumulate(weights: torch.Tensor, distances: torch.Tensor, std: float, topk: int | None) -> None:
    """Add one block's posterior weights, summed over positions (or the top
    ``topk``), to ``weights`` [N]. distances: [b, N, positions]."""
    logits = (-distances.clamp(min=0) / (2 * std**2)).flatten(1)  # [b, N positions]
    weight = torch.softmax(logits, dim=1).view_as(distances)
    per_image = weight.sum(-1) if topk is None else weight.topk(min(topk, weight.shape[-1]), dim=-1).values.sum(-1)
    weights += per_image.sum(0)


def patch_weights(noisy: torch.Tensor, train: torch.Tensor, scale: float, std: float, *, patch: int, topk=None, mask_value=10.0, kernel_batch=16):
    """[Q, N] patch NDA weights of noised queries [Q, C, H, W] over training
    images [N, C, H, W]: for each query patch, the softmax over images and
    positions, summed per image over positions (or the ``topk`` largest) and
    over the query's patches. Distances are convolutions over the padded
    training set, as in the authors' code: no [N, positions, C p^2] tensor."""
    channels = train.shape[1]
    padded_train = _pad(scale * train, patch, mask_value)
    train_norms = F.conv2d(padded_train**2, padded_train.new_ones(1, channels, patch, patch)).flatten(1)  # [N, positions]
    weights = noisy.new_zeros(len(noisy), len(train))
    for q in range(len(noisy)):
        for block in _patch_kernels(noisy[q], patch, mask_value).split(kernel_batch):
            cross = F.conv2d(padded_train, block).flatten(2).transpose(0, 1)  # [b, N, positions]
            distances = (block**2).sum((1, 2, 3))[:, None, None] + train_norms[None] - 2 * cross
            _accumulate(weights[q], distances, std, topk)
    return weights


def pooled_patch_weights(noisy, train, scale: float, std: float, *, patch: int, topk=None, mask_value=10.0, kernel_batch=16):
    """[Q, N] NDA weights of ``patch`` x ``patch`` patches (``patch`` even)
    compared after 2 x 2 block pooling: distance |P x_patch - P y_patch|^2
    with P the authors' orthonormal projection onto the patch's
    (patch / 2)^2 blocks, per channel."""
    if patch % 2:
        raise ValueError(f"two_scale.patch must be even (2 x 2 blocks), got {patch}")
    channels, blocks = train.shape[1], patch // 2
    padded_train = _pad(scale * train, patch, mask_value)
    pooled_train = _block_pool(padded_train)  # [N, C, H', W'], H' = H + 2 pad - 1
    # |P y_patch|^2 at every position: the pooled values on the patch's block grid (dilation 2).
    train_norms = F.conv2d(pooled_train**2, pooled_train.new_ones(1, channels, blocks, blocks), dilation=2).flatten(1)
    weights = noisy.new_zeros(len(noisy), len(train))
    for q in range(len(noisy)):
        kernels = _patch_kernels(noisy[q], patch, mask_value)  # [positions, C, p, p]
        pooled = _block_pool(kernels)[:, :, ::2, ::2]  # [positions, C, p/2, p/2]: P x_patch
        for block in pooled.split(kernel_batch):
            cross = F.conv2d(pooled_train, block, dilation=2).flatten(2).transpose(0, 1)  # <P x, P y> [b, N, positions]
            distances = (block**2).sum((1, 2, 3))[:, None, None] + train_norms[None] - 2 * cross
            _accumulate(weights[q], distances, std, topk)
    return weights


def image_weights(noisy: torch.Tensor, train: torch.Tensor, scale: float, std: float) -> torch.Tensor:
    """[Q, N] whole-image NDA weights: softmax_i(-|x_t - s y_i|^2 / (2 sigma^2))."""
    logits = -(torch.cdist(noisy.flatten(1), scale * train.flatten(1)) ** 2) / (2 * std**2)
    return torch.softmax(logits, dim=1)


def nda_weights(noisy, train, scale: float, std: float, *, patch=None, topk=None, mask_value=10.0, two_scale=None, kernel_batch=16):
    """[Q, N] NDA weights of noised queries: whole images (``patch`` None),
    patches, or two scales (``two_scale`` {patch, alpha}: alpha x patch
    weights + (1 - alpha) x pooled weights of ``two_scale.patch``)."""
    if patch is None:
        return image_weights(noisy, train, scale, std)
    weights = patch_weights(noisy, train, scale, std, patch=patch, topk=topk, mask_value=mask_value, kernel_batch=kernel_batch)
    if two_scale is None:
        return weights
    pooled = pooled_patch_weights(noisy, train, scale, std, patch=two_scale["patch"], topk=topk, mask_value=mask_value, kernel_batch=kernel_batch)
    return two_scale["alpha"] * weights + (1 - two_scale["alpha"]) * pooled


def shared_noise(shape, timestep: int, seed: int, draw: int) -> torch.Tensor:
    """The noise every query shares at ``timestep`` in draw ``draw`` [C, H, W]."""
    generator = torch.Generator().manual_seed(seed * 1000 + timestep + DRAW_SEED_STRIDE * draw)
    return torch.randn(shape, generator=generator)


def nda_scores_at(queries: torch.Tensor, train: torch.Tensor, alphas_cumprod, timestep: int, method: dict) -> torch.Tensor:
    """[Q, N] NDA weights at ``timestep``, averaged over ``method['draws']``
    shared noise draws."""
    abar = float(alphas_cumprod[timestep])
    scale, std = abar**0.5, (1 - abar) ** 0.5
    total = queries.new_zeros(len(queries), len(train))
    for draw in range(method["draws"]):
        noisy = scale * queries + std * shared_noise(queries.shape[1:], timestep, method["seed"], draw).to(queries)
        total += nda_weights(
            noisy,
            train,
            scale,
            std,
            patch=method["patch"],
            topk=method["topk"],
            mask_value=method["mask_value"],
            two_scale=method["two_scale"],
            kernel_batch=method["kernel_batch"],
        )
    return total / method["draws"]


def score_nda(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: nda`` (``methods``): the weights at the default
    timestep and its grid, signed per measurement like pixel similarity."""
    timesteps = scored_values(job.method)
    with torch.no_grad():
        weights = torch.stack([nda_scores_at(job.queries, job.train, job.scheduler.alphas_cumprod, int(t), job.method) for t in timesteps])
    weights = weights.double().cpu().numpy()  # [L, Q, N]
    signed = [signed_per_measurement(job, w) for w in weights]
    return [float(t) for t in timesteps], {name: np.concatenate([s[name] for s in signed]) for name in job.measurements}
