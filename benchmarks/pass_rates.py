"""Training and measurement rates of a config's UNet under each way of
running the network (``NetworkPasses`` keys: fp32, tf32, bf16, each eager
or "+compile", "+channels_last"), and the aggregate rates of several jobs
sharing one device.

    .venv/bin/python benchmarks/pass_rates.py --config configs/cifar2.yaml \
        --passes fp32 tf32 bf16 fp32+compile tf32+compile bf16+compile
    .venv/bin/python benchmarks/pass_rates.py --config configs/cifar2.yaml --passes bf16 --jobs 1 2 4

Each rate is what `snakemake calibrate` measures for the plan
(``ldsbench.planning.throughput.measure_rates``): an AdamW step at the
training batch and a forward pass at the measurement jobs' batch, each timed
for ``--seconds`` after a warm-up call (which compiles, for a compiled key;
the compile time is printed apart). With ``--jobs``, that many processes
start together and time their own steps at once; their rates are summed.
A key that fails (a compiler missing, out of memory) prints its error and
the others go on.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from ldsbench.planning.plan import measurement_batch
from ldsbench.spec.config import validate_config


def rates_of(config: dict, key: str, device: str, seconds: float) -> dict:
    import torch

    from ldsbench.planning.throughput import measure_rates

    torch._dynamo.reset()
    start = time.perf_counter()
    rates = measure_rates(config["model"], torch.device(device), key, config["training"]["batch_size"], measurement_batch(config), seconds)
    # Everything but the two timed windows: building, warm-ups, compiling.
    rates["overhead_seconds"] = time.perf_counter() - start - 2 * seconds
    return rates


WORKERS: list[subprocess.Popen] = []


def _stop(signum, frame):
    """Stopped (a time limit): stop the workers too."""
    for worker in WORKERS:
        worker.kill()
    sys.exit(128 + signum)


def concurrent(args, key: str, jobs: int) -> dict:
    """Rates of ``jobs`` processes started together, summed."""
    command = [sys.executable, __file__, "--config", args.config, "--device", args.device, "--seconds", str(args.seconds), "--worker", key]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    WORKERS[:] = workers
    outputs = [worker.communicate()[0] for worker in workers]
    failed = [worker.returncode for worker in workers if worker.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {jobs} jobs failed (exit status {failed[0]}; their error is printed above)")
    results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    return {
        "passes": key,
        "jobs": jobs,
        "train_draws_per_second": sum(r["train_draws_per_second"] for r in results),
        "forward_draws_per_second": sum(r["forward_draws_per_second"] for r in results),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml", help="config whose model, training batch and measurements are used")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--passes", nargs="+", default=["fp32", "tf32", "bf16", "fp32+compile", "tf32+compile", "bf16+compile"], help="NetworkPasses keys")
    parser.add_argument("--jobs", nargs="+", type=int, default=None, help="concurrent jobs per device (for each key)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per rate after the warm-up")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    if args.worker:
        print(json.dumps(rates_of(config, args.worker, args.device, args.seconds)), flush=True)
        return
    signal.signal(signal.SIGTERM, _stop)
    print(
        f"config {args.config}: training batch {config['training']['batch_size']}, measurement batch {measurement_batch(config)}; {args.seconds} s timed per rate"
    )
    for key in args.passes:
        for jobs in args.jobs or [None]:
            try:
                if jobs is None:
                    r = rates_of(config, key, args.device, args.seconds)
                    print(
                        f"  {key:28s} training {r['train_draws_per_second']:9.1f} draws/s   forward {r['forward_draws_per_second']:9.1f} draws/s"
                        f"   (build, warm-up and compile {r['overhead_seconds']:.0f} s; {r['device']})",
                        flush=True,
                    )
                else:
                    r = concurrent(args, key, jobs)
                    print(
                        f"  {key:20s} {jobs} job(s)   training {r['train_draws_per_second']:9.1f} draws/s   forward {r['forward_draws_per_second']:9.1f} draws/s (summed)",
                        flush=True,
                    )
            except Exception as error:  # report the key's failure, measure the rest
                print(f"  {key:28s} failed: {type(error).__name__}: {str(error)[:200]}", flush=True)


if __name__ == "__main__":
    main()
