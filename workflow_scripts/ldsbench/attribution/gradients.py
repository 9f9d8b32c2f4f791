"""Per-example gradients of the attributed weights, streamed in batches.

The gradient for example i is that of the Monte Carlo average
(1/n_draws) sum_d f(x_i, t_d, eps_d) of a per-draw output function f
(``diffusion.per_draw_output``: a name such as "loss", or a callable output
function such as a measurement's), taken with respect to the weights listed
by ``model.attributed_parameters``. Gradients are never written to disk.

The draws are laid out by ``noise.GradientDraws`` (a plain int: that many
uniform draws). An example's draws are keyed by its content
(``noise.content_key``), or shared by all examples (``common``), so its
gradient does not depend on its row, on the other examples or on the block
size.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from tqdm import tqdm

from ldsbench.diffusion.model import attributed_parameters
from ldsbench.diffusion.noise import GradientDraws, as_gradient_draws, content_key
from ldsbench.diffusion.outputs import per_draw_output, timestep_probabilities


def example_gradient(
    unet, scheduler, image: torch.Tensor, item: int, output_fn, n_draws: int | GradientDraws, stream: int, draws_per_pass: int = 64
) -> torch.Tensor:
    """Gradient of one example's averaged output: image [C, H, W] -> [P] float32.

    Draws 0..n-1 of content key ``item`` under ``stream`` are used (``n_draws``:
    a count of uniform draws, or their ``GradientDraws`` layout).
    """
    plan = as_gradient_draws(n_draws)
    n_draws = plan.count
    params = attributed_parameters(unet)
    shape, num_timesteps = tuple(image.shape), scheduler.config.num_train_timesteps
    total = [torch.zeros_like(p) for p in params]
    # Output functions that importance-sample timesteps need their draws from
    # their own proposal; every other one gets plain uniform draws.
    probabilities = timestep_probabilities(output_fn, scheduler)
    for start in range(0, n_draws, draws_per_pass):
        count = min(draws_per_pass, n_draws - start)
        timesteps, noise = plan.draws(stream, item, start, count, shape, num_timesteps, probabilities)
        x0 = image.unsqueeze(0).expand(count, *shape)
        noise, timesteps = noise.to(image.device, image.dtype), timesteps.to(image.device)
        value = per_draw_output(unet, scheduler, x0, noise, timesteps, output_fn).sum() / n_draws
        for acc, grad in zip(total, torch.autograd.grad(value, params)):
            acc += grad
    return torch.cat([g.reshape(-1) for g in total])


def iter_example_gradients(
    unet,
    scheduler,
    images: torch.Tensor,
    output_fn,
    n_draws: int | GradientDraws,
    stream: int,
    batch_examples: int = 32,
    draws_per_pass: int = 64,
    *,
    progress: bool = True,
    desc: str = "per-example gradients",
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, gradients [B, P]) for consecutive blocks of ``images`` [N, C, H, W].

    Memory: one block [B, P] and one example's gradient, while the block is
    built. A caller that streams the blocks should drop each one before
    asking for the next (``del grads`` at the end of its loop body): the
    loop variable would otherwise keep the old block alive while the next
    is built, doubling the peak.

    Draws for example i are keyed by (stream, content_key(images[i])) (or
    shared, ``GradientDraws.common``), so a gradient depends neither on the
    example's row nor on the block size. The
    UNet is put in eval mode (no dropout). With ``progress`` a tqdm bar
    named ``desc`` counts examples on stderr (at most every 30 s).
    """
    unet.eval()
    with tqdm(total=len(images), desc=desc, unit="example", file=sys.stderr, mininterval=30, disable=not progress) as bar:
        for first in range(0, len(images), batch_examples):
            rows = slice(first, min(first + batch_examples, len(images)))
            # Each gradient is written into its row as it is computed: a
            # list stacked at the end would hold the block twice.
            grads = None
            for row, i in enumerate(range(rows.start, rows.stop)):
                gradient = example_gradient(unet, scheduler, images[i], content_key(images[i]), output_fn, n_draws, stream, draws_per_pass)
                if grads is None:
                    grads = gradient.new_empty(rows.stop - rows.start, gradient.numel())
                grads[row] = gradient
                del gradient
            bar.update(rows.stop - rows.start)
            yield rows, grads
            # Hold no block while the next is computed (a streaming caller
            # drops its own reference too: ``memory.projected_feature_bytes``).
            del grads
