"""Nonparametric data attribution (NDA; Zhao et al. 2025, arXiv 2510.14269,
sail-sg/NDA ``CIFAR2/nda_single_scale.py``) as an external method
(``type: external``, docs/external-methods.md): no model, no gradient.
NDA is also a built-in method type (``type: nda``, docs/methods.md, with
the two-scale variant); this file stays as a worked example of the
interface, and tests/methods/test_nda_example.py checks that it gives that
type's weights.

The query x is noised to a fixed timestep t, x_t = s x + sigma eps with
s = sqrt(abar_t), sigma = sqrt(1 - abar_t), and each training image y_i is
weighted by the posterior of the empirical optimal denoiser,

    w_i proportional to exp(-|x_t - s y_i|^2 / (2 sigma^2)),

the softmax over training images. The patch variant (the authors' default)
does this for every p x p patch of x_t against every patch position of
every training image (a softmax over images and positions), sums each
image's weights over its positions (or its ``topk`` largest) and over the
query's patches. Both images are padded by (p - 1) / 2 with ``mask_value``
(their code pads x_t with 0 and adds the mask value; y with s y and the mask
value), so patches past an edge match only patches past the same edge.

As in their code, one noise draw per timestep is shared by every query
(re-seeded per (query, t)); ``draws`` > 1 averages the weights over more
shared draws. The weights are a similarity: the score's sign follows the
measurement's orientation as for pixel similarity (``similarity_sign``).

params: ``t`` (their 100 .. 500; 100 in their commands) and ``t_grid``
(tuned by the benchmark's cross-fitting), ``patch`` (their 7
on 32 x 32 CIFAR; null for whole images), ``topk`` (their 100; null: every
position), ``mask_value`` (their 10), ``draws`` (their 1), ``seed``,
``query_batch`` (patches per softmax block: the memory knob).

Peak memory: one block of query_batch x N x H W distances and their
softmax (float32), e.g. 2 x 16 x 5000 x 1024 x 4 bytes = 655 MB on CIFAR-2,
plus the padded training set (N C (H + p - 1)^2, 90 MB there).
"""

import torch
import torch.nn.functional as F

from ldsbench.methods.similarity import similarity_sign


def padded_patches(images: torch.Tensor, patch: int, mask_value: float) -> torch.Tensor:
    """[B, H W, C p p]: the p x p patch around every pixel, padded with ``mask_value``."""
    pad = (patch - 1) // 2
    padded = F.pad(images, (pad, pad, pad, pad), value=mask_value)
    return F.unfold(padded, kernel_size=patch).transpose(1, 2)


def nda_weights(noisy: torch.Tensor, train: torch.Tensor, scale: float, std: float, *, patch=None, topk=None, mask_value=10.0, query_batch=16):
    """[Q, N] NDA weights of noised queries [Q, C, H, W] over training images [N, C, H, W].

    Patch distances are convolutions over the padded training images, as in
    the authors' code, so no [N, H W, C p p] patch tensor is ever built: the
    peak is one block of query_batch x N x H W distances."""
    if patch is None:
        logits = -(torch.cdist(noisy.flatten(1), scale * train.flatten(1)) ** 2) / (2 * std**2)
        return torch.softmax(logits, dim=1)
    pad = (patch - 1) // 2
    channels = train.shape[1]
    padded_train = F.pad(scale * train, (pad, pad, pad, pad), value=mask_value)  # [N, C, H + 2 pad, W + 2 pad]
    train_norms = F.conv2d(padded_train**2, padded_train.new_ones(1, channels, patch, patch))  # [N, 1, H, W]
    n_train = len(train)
    weights = noisy.new_zeros(len(noisy), n_train)
    for q in range(len(noisy)):
        kernels = padded_patches(noisy[q : q + 1], patch, mask_value)[0].view(-1, channels, patch, patch)  # [H W, C, p, p]
        for block in kernels.split(query_batch):
            cross = F.conv2d(padded_train, block)  # [N, b, H, W]
            distances = (block**2).sum((1, 2, 3))[None, :, None, None] + train_norms - 2 * cross
            logits = (-distances.clamp(min=0) / (2 * std**2)).transpose(0, 1).flatten(1)  # [b, N H W]
            weight = torch.softmax(logits, dim=1).view(len(block), n_train, -1)
            per_image = weight.sum(-1) if topk is None else weight.topk(min(topk, weight.shape[-1]), dim=-1).values.sum(-1)
            weights[q] += per_image.sum(0)
    return weights


def nda_scores(inputs, t: int):
    """[Q, N] weights at timestep ``t``, averaged over the shared noise draws."""
    params = inputs.params
    abar = float(inputs.scheduler.alphas_cumprod[t])
    scale, std = abar**0.5, (1 - abar) ** 0.5
    total = 0
    for draw in range(params.get("draws", 1)):
        generator = torch.Generator().manual_seed(params.get("seed", 0) * 1000 + t + 1_000_003 * draw)
        noise = torch.randn(inputs.queries.shape[1:], generator=generator).to(inputs.queries)
        noisy = scale * inputs.queries + std * noise  # one noise for every query
        total = total + nda_weights(
            noisy,
            inputs.train,
            scale,
            std,
            patch=params.get("patch"),
            topk=params.get("topk"),
            mask_value=params.get("mask_value", 10.0),
            query_batch=params.get("query_batch", 16),
        )
    return total / params.get("draws", 1)


def score(inputs):
    """The timestep ``t`` first, then ``t_grid``: the benchmark tunes t by cross-fitting."""
    params = inputs.params
    timesteps = list(dict.fromkeys([params["t"], *params.get("t_grid", [])]))
    weights = torch.stack([nda_scores(inputs, t) for t in timesteps])  # [L, Q, N]
    return timesteps, {m: similarity_sign(inputs.orientation(m), params.get("sign")) * weights for m in inputs.measurements}
