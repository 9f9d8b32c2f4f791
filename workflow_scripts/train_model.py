"""Train one model of a training kind (``ldsbench.spec.training_runs``: the
full-data model, a full-data model of another seed, one (subset, seed)
model, or a removal model) and save its EMA weights."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ldsbench.data.image_sets import image_set_hash, load_image_set
from ldsbench.diffusion.model import build_scheduler
from ldsbench.diffusion.passes import network_passes
from ldsbench.diffusion.training import TrainingDivergedError, TrainingSettings, train_diffusion_model
from ldsbench.runtime.io import config_hash
from ldsbench.runtime.jobs import save_model, select_device, start_job
from ldsbench.runtime.provenance import architecture_hash, training_hash
from ldsbench.spec.training_runs import training_run

log = start_job(snakemake)
params = snakemake.params
train = load_image_set(snakemake.input.train)
subset, seed = params.get("subset"), params.get("seed")
removed = snakemake.input.get("removed")
subset_rows = removed_rows = None
if params.kind == "subset":
    frame = pd.read_parquet(snakemake.input.subsets)
    subset_rows = frame.loc[frame["subset"] == subset, "train_index"].to_numpy()
if removed:
    removed_rows = json.loads(Path(removed).read_text())["removed"]
run = training_run(params.kind, len(train), params.training, subset=subset, seed=seed, subset_rows=subset_rows, removed_rows=removed_rows or ())
name, rows = run.name, run.rows
settings = TrainingSettings.from_config(params.training, **run.overrides)

device = select_device(params.device)
images = torch.from_numpy(train.images[rows])
scheduler = build_scheduler(params.model["scheduler"])
log.info("training %s on %s examples for %s steps (device %s)", name, len(rows), settings.steps, device)


# A progress bar in the log (stderr goes there), refreshed at most every
# 30 s, beside a plain log line every 100 steps.
bar = tqdm(total=settings.steps, desc=f"training {name}", unit="step", mininterval=30, file=sys.stderr)


def progress(step, loss):
    bar.set_postfix(loss=f"{loss:.5f}", refresh=False)
    bar.update(step - bar.n)
    if step % 100 == 0 or step == settings.steps:
        log.info("step %s/%s loss %.5f", step, settings.steps, loss)


try:
    with network_passes(params.precision, device) as passes:
        unet = train_diffusion_model(images, params.model["unet"], scheduler, settings, params.resume, progress, device, passes=passes)
except TrainingDivergedError as error:
    raise RuntimeError(f"training diverged for {name}: {error}; no model was written") from error

save_model(
    unet,
    scheduler,
    snakemake.output[0],
    {
        "model": name,
        "kind": run.kind,
        "subset": subset,
        "seed": seed,
        "removed_from": removed,
        "removed_rows": list(run.removed_rows),
        "training_seed": settings.seed,
        "config_hash": config_hash({"model": params.model, "training": params.training}),
        "config": {"model": params.model, "training": params.training},
        "architecture_hash": architecture_hash(params.model),
        "training_hash": training_hash(params.training),
        "data_sha256": image_set_hash(train),
        "train_rows": rows.tolist(),
        "settings": dataclasses.asdict(settings),
    },
)
bar.close()
# The model is complete: its resume state is no longer needed.
shutil.rmtree(params.resume, ignore_errors=True)
log.info("saved %s", snakemake.output[0])
