"""Kill a training with SIGKILL mid-run, resume it, and compare the weights
with an uninterrupted run, on whatever device is present.

    .venv/bin/python benchmarks/resume_check.py --config configs/cifar2.yaml --steps 40 --batch 32

A training writes a checkpoint every ``--every`` steps (the workflow's
``training.checkpoint_every``); the child process is killed once the first
checkpoint exists and a second child resumes from it. Every random draw of
step s is seeded by (seed, s), so on a CPU the resumed weights are bitwise
equal; on a GPU, kernels that are not deterministic (atomics in
convolution backward passes) may differ in the last bits, and the largest
difference is printed next to the weights' scale.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from ldsbench.diffusion.model import build_scheduler  # noqa: E402
from ldsbench.diffusion.training import TrainingSettings, train_diffusion_model  # noqa: E402


def train(config: dict, steps: int, batch: int, every: int, resume_dir: Path, out: Path, device: str) -> None:
    torch.manual_seed(0)
    unet_config = config["model"]["unet"]
    size, channels = unet_config["sample_size"], unet_config["in_channels"]
    images = torch.rand(64, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = TrainingSettings.from_config({**config["training"], "steps": steps, "batch_size": batch, "checkpoint_every": every})
    unet = train_diffusion_model(images, unet_config, build_scheduler(config["model"]["scheduler"]), settings, resume_dir, device=device)
    torch.save({k: v.cpu() for k, v in unet.state_dict().items()}, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=2, metavar=("RESUME_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    if args.child:
        train(config, args.steps, args.batch, args.every, Path(args.child[0]), Path(args.child[1]), args.device)
        return

    work = Path(tempfile.mkdtemp(prefix="resume-check-"))
    child = [
        sys.executable,
        __file__,
        "--config",
        args.config,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--every",
        str(args.every),
        "--device",
        args.device,
        "--child",
    ]
    start = time.time()
    subprocess.run([*child, str(work / "straight"), str(work / "straight.pt")], check=True)
    print(f"uninterrupted: {args.steps} steps in {time.time() - start:.0f} s")
    process = subprocess.Popen([*child, str(work / "killed"), str(work / "resumed.pt")])
    checkpoint = work / "killed" / "checkpoint.pt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    print(f"killed with SIGKILL after the first checkpoint (exit {process.returncode})")
    subprocess.run([*child, str(work / "killed"), str(work / "resumed.pt")], check=True)
    a, b = torch.load(work / "straight.pt"), torch.load(work / "resumed.pt")
    largest = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    scale = max(a[k].double().abs().max().item() for k in a)
    identical = all(torch.equal(a[k], b[k]) for k in a)
    print(f"resumed vs uninterrupted: bitwise identical {identical}; largest difference {largest:.3e} (largest weight {scale:.3e})")


if __name__ == "__main__":
    main()
