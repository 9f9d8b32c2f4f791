"""Throughput of the benchmark's building blocks for a config's UNet, on
whatever device is present (a randomly initialised model: speed does not
depend on the weights).

    .venv/bin/python benchmarks/throughput.py --config configs/cifar2.yaml [--precision bf16]

Prints draws (or examples) per second for a training step, a measurement
draw (forward only), a per-example gradient (one backward pass per example
over its draws, as the scorers do; and, for comparison, several examples per
pass through torch.func.vmap), and the random projection of gradients.
The training step and the measurement draw are the two rates `snakemake
calibrate` measures for the plan (``ldsbench.planning.throughput``); the
training step's is also printed as a `runtime.draws_per_second` to type in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from ldsbench.attribution.gradients import example_gradient
from ldsbench.attribution.projection import RandomProjector
from ldsbench.diffusion.model import attributed_modules, attributed_parameters, build_scheduler, build_unet
from ldsbench.diffusion.outputs import noised
from ldsbench.diffusion.precision import PRECISIONS, network_precision
from ldsbench.planning.throughput import device_name, measurement_forward, synchronize, timed, training_step


def per_example_gradients(unet, scheduler, examples, draws, device, precision):
    images = torch.rand(examples, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, device=device) * 2 - 1

    def gradients():
        with network_precision(precision, device):
            for i, image in enumerate(images):
                example_gradient(unet, scheduler, image, i, "loss", draws, stream=0, draws_per_pass=draws)

    return gradients


def vmapped_gradients(unet, scheduler, examples, draws, device, precision):
    """Several examples per pass: torch.func.grad of each example's mean loss, vmapped over examples."""
    from torch.func import functional_call, grad, vmap

    names = {id(p): n for n, p in unet.named_parameters()}
    attributed = {names[id(p)]: p.detach() for p in attributed_parameters(unet)}
    others = {n: p.detach() for n, p in unet.named_parameters() if n not in attributed}
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x0 = torch.rand(examples, *shape, device=device) * 2 - 1
    noise = torch.randn(examples, draws, *shape, device=device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (examples, draws), device=device)

    def example_loss(params, image, eps, steps):
        x = noised(scheduler, image.expand(draws, *shape), eps, steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            prediction = functional_call(unet, {**params, **others}, (x, steps)).sample.float()
        return ((prediction - eps) ** 2).mean()

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0, 0), randomness="same")

    def gradients():
        with network_precision(precision, device):
            per_example(attributed, x0, noise, t)

    return gradients


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml", help="config whose model.unet is measured")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default: the config's training.batch_size)")
    parser.add_argument("--draws", type=int, default=64, help="draws per example for the gradients")
    parser.add_argument("--examples", type=int, default=4, help="examples per gradient measurement")
    parser.add_argument("--projection-dim", type=int, default=4096)
    parser.add_argument(
        "--projection-kinds", default="rademacher,sparse", help="comma-separated projector kinds (a dense projection at P = 38M takes many minutes on a CPU)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config = yaml.safe_load(Path(args.config).read_text())
    unet = build_unet(config["model"]["unet"]).to(device)
    scheduler = build_scheduler(config["model"]["scheduler"])
    params = sum(m.weight.numel() for _, m in attributed_modules(unet))
    batch = args.train_batch or config["training"]["batch_size"]
    name = device_name(device)
    print(
        f"device: {name}; precision {args.precision}; UNet of {args.config}: {sum(p.numel() for p in unet.parameters()):,} parameters, P = {params:,} attributed"
    )
    rows = []

    unet.train()
    seconds = timed(training_step(unet, scheduler, batch, device, args.precision), device, args.repeats)
    rows.append(("training step", f"batch {batch}", batch / seconds, "draws/s (forward+backward)"))
    train_rate = batch / seconds
    unet.eval()
    seconds = timed(measurement_forward(unet, scheduler, 256, device, args.precision), device, args.repeats)
    rows.append(("measurement draw", "batch 256, no grad", 256 / seconds, "draws/s (forward)"))
    seconds = timed(per_example_gradients(unet, scheduler, args.examples, args.draws, device, args.precision), device, args.repeats)
    rows.append(("per-example gradient", f"{args.draws} draws, one example per pass", args.examples / seconds, "examples/s"))
    try:
        seconds = timed(vmapped_gradients(unet, scheduler, args.examples, args.draws, device, args.precision), device, args.repeats)
        rows.append(("per-example gradient (vmap)", f"{args.draws} draws, {args.examples} examples per pass", args.examples / seconds, "examples/s"))
    except Exception as error:  # torch.func does not support every module
        rows.append(("per-example gradient (vmap)", f"unsupported: {type(error).__name__}: {str(error)[:80]}", float("nan"), ""))
    grads = torch.randn(8, params, device=device)
    for kind in args.projection_kinds.split(","):
        projector = RandomProjector(params, args.projection_dim, seed=0, kind=kind, device=device)
        start = time.perf_counter()
        projector.project(grads)
        synchronize(device)
        first = time.perf_counter() - start
        rows.append((f"projection ({kind})", f"k = {args.projection_dim}, 8 gradients, blocks generated", 8 / first, "gradients/s"))
        seconds = timed(lambda: projector.project(grads), device, 1)
        cached = projector._cached_bytes / 2**30
        rows.append((f"projection ({kind})", f"k = {args.projection_dim}, 8 gradients, {cached:.1f} GiB of blocks cached", 8 / seconds, "gradients/s"))

    if device.type == "cuda":
        rows.append(("peak memory", "largest allocation of the run", torch.cuda.max_memory_allocated(device) / 2**30, "GiB"))
    width = max(len(r[0]) + len(r[1]) for r in rows) + 3
    for what, detail, rate, unit in rows:
        print(f"  {what} ({detail})".ljust(width + 4), f"{rate:12.2f} {unit}")
    print(f"runtime.draws_per_second: {train_rate:.1f}   # for `snakemake plan` on this device")


if __name__ == "__main__":
    main()
