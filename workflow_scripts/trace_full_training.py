"""Replay the full model's training, keeping its raw weights at each checkpoint."""

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from ldsbench.data.image_sets import load_image_set
from ldsbench.diffusion.model import build_scheduler
from ldsbench.diffusion.passes import network_passes
from ldsbench.diffusion.training import TrainingSettings, snapshot_steps, train_diffusion_model
from ldsbench.runtime.io import save_json
from ldsbench.runtime.jobs import load_model, select_device, start_job

log = start_job(snakemake)
params = snakemake.params
settings = TrainingSettings.from_config(params.training)
device = select_device(params.device)
images = torch.from_numpy(load_image_set(snakemake.input.train).images)
scheduler = build_scheduler(params.model["scheduler"])
output = Path(snakemake.output[0])
tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)


def keep(step, unet):
    torch.save({name: value.detach().cpu().clone() for name, value in unet.state_dict().items()}, tmp / f"step_{step}.pt")
    log.info("kept the raw weights after step %s", step)


# Snapshots of a resumed run before its checkpoint were written by the
# killed run into a temporary folder of its own: start from scratch instead.
shutil.rmtree(params.resume, ignore_errors=True)
with network_passes(params.precision, device) as passes:  # as the full model was trained
    unet = train_diffusion_model(images, params.model["unet"], scheduler, settings, params.resume, None, device, snapshot=keep, passes=passes)
full, _, _ = load_model(snakemake.input.model, device)
difference = max((a - b).abs().max().item() for a, b in zip(unet.state_dict().values(), full.state_dict().values()))
log.info("largest difference between the replayed and the full model's EMA weights: %.3g", difference)
# On the CPU the replay is bitwise identical; GPU kernels may drift a little.
if difference > 1e-4:
    log.warning("the replayed training ends %.3g away from %s; TracIn scores follow the replayed trajectory", difference, snakemake.input.model)
save_json(tmp / "trajectory.json", {"steps": snapshot_steps(settings), "settings": dataclasses.asdict(settings), "max_difference_to_full_model": difference})
os.replace(tmp, output)
shutil.rmtree(params.resume, ignore_errors=True)
