"""A projected-feature job (``project_training_features``) of a config's UNet
at a chosen training-set size, on whatever device is present: seconds per
training example, gradient draws per second and the peak memory, against
the plan's estimate for the same job (``ldsbench.planning.plan.feature_estimate``).
A randomly initialised model on random images: speed and memory do not
depend on the weights.

    .venv/bin/python benchmarks/projected_features.py --config configs/cifar2.yaml --n-train 512 --method trak

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU (the plan's
estimate adds ``PROCESS_BASE_BYTES`` for the process, which that figure
does not hold) and the process's maximum resident size on a CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from ldsbench.attribution.projected_features import feature_batch, features_of
from ldsbench.diffusion.model import attributed_parameters, build_scheduler, build_unet
from ldsbench.planning.footprint import footprint_of
from ldsbench.planning.memory import GIB, PROCESS_BASE_BYTES
from ldsbench.planning.plan import feature_estimate, job_budget
from ldsbench.spec.method_types import training_feature_sets
from ldsbench.spec.schema import block_defaults, section_defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml", help="config whose UNet, runtime and method are used")
    parser.add_argument("--method", default="trak", help="a method of the config that reads projected training features")
    parser.add_argument("--n-train", type=int, default=64, help="training examples (random images)")
    parser.add_argument("--train-draws", type=int, default=None, help="override the method's train_draws")
    parser.add_argument(
        "--projection",
        default=None,
        choices=["rademacher", "gaussian", "sparse"],
        help="override the method's projection (dense ones take hours at P = 38M on a CPU)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())
    # Only the model, runtime and method are used: the dataset need not be on this machine.
    method = config["methods"][args.method]
    method = {**block_defaults(f"{method['type']}_method"), **method}
    for key in ("train_draws", "projection"):
        if getattr(args, key) is not None:
            method[key] = getattr(args, key)
    runtime = {**section_defaults("runtime"), **config.get("runtime", {})}
    settings = training_feature_sets(method)[0]
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")

    unet, scheduler = build_unet(config["model"]["unet"]).to(device).eval(), build_scheduler(config["model"]["scheduler"])
    size = config["model"]["unet"]["sample_size"]
    generator = torch.Generator().manual_seed(0)
    train = (torch.rand(args.n_train, config["model"]["unet"]["in_channels"], size, size, generator=generator) * 2 - 1).to(device)
    budget_bytes, budget_setting = job_budget(runtime, device.type)
    draws_per_pass = runtime["gradient_draws_per_pass"]
    batch = feature_batch(unet, settings, n_train=args.n_train, budget_bytes=budget_bytes, budget_setting=budget_setting, draws_per_pass=draws_per_pass)
    plan_config = {"dataset": {"n_train": args.n_train}, "runtime": runtime}
    estimate = feature_estimate(settings, plan_config, footprint_of(unet), budget_bytes, budget_setting)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    features = features_of(unet, scheduler, train, settings, batch_examples=batch, draws_per_pass=draws_per_pass)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak, peak_name = torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
        estimate_bytes = estimate.peak_bytes - PROCESS_BASE_BYTES  # the device holds no interpreter
    else:
        peak, peak_name = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max resident size"
        estimate_bytes = estimate.peak_bytes

    draws = args.n_train * settings["train_draws"]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch {torch.__version__}")
    print(
        f"method {args.method}: output_fn {settings['output_fn']}, k {settings['projection_dim']} ({settings['projection']}), train_draws {settings['train_draws']}"
    )
    print(f"attributed weights {sum(p.numel() for p in attributed_parameters(unet)):,}, N {args.n_train}, batch {batch}")
    print(f"features {tuple(features.shape)}, finite {bool(torch.isfinite(features).all())}")
    print(f"seconds {seconds:.1f}, per example {seconds / args.n_train:.3f}, draws/s {draws / seconds:.0f}")
    print(f"peak ({peak_name}) {peak / GIB:.2f} GiB, plan estimate {estimate_bytes / GIB:.2f} GiB")
    full_n = config.get("dataset", {}).get("n_train", args.n_train)
    print(f"at the config's N = {full_n}: {full_n * settings['train_draws']:,} passes, {full_n * seconds / args.n_train / 60:.1f} min at this rate")


if __name__ == "__main__":
    main()
