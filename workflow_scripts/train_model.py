"""Train the full-data model, one (subset, seed) model, or a removal model
(all data, or all but a removed set, with a removal seed); save its EMA weights."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ldsbench.data import image_set_hash, load_image_set
from ldsbench.io import config_hash
from ldsbench.jobs import save_model, select_device, start_job
from ldsbench.model import build_scheduler
from ldsbench.noise import stream_seed
from ldsbench.precision import network_precision
from ldsbench.provenance import architecture_hash, training_hash
from ldsbench.removal import kept_rows, removal_training_seed
from ldsbench.training import TrainingDivergedError, TrainingSettings, train_diffusion_model

log = start_job(snakemake)
params = snakemake.params
subset, seed = params.subset, params.seed
train = load_image_set(snakemake.input.train)
overrides = {}

removed, removed_rows = snakemake.input.get("removed"), []
if subset is None and seed is None:
    name, rows = "full model", np.arange(len(train))
elif subset is None:
    # Removal models: the full model's steps, a removal seed, and the
    # training set without the removed rows (none for the all-data reference).
    removed_rows = json.loads(Path(removed).read_text())["removed"] if removed else []
    name = f"removal model seed {seed} without {len(removed_rows)} examples ({removed or 'all data'})"
    rows = kept_rows(len(train), removed_rows)
    overrides["seed"] = removal_training_seed(params.training["seed"], seed)
else:
    name = f"subset {subset} seed {seed}"
    frame = pd.read_parquet(snakemake.input.subsets)
    rows = np.sort(frame.loc[frame["subset"] == subset, "train_index"].to_numpy())
    if rows.size == 0:
        raise ValueError(f"subset {subset} is not in {snakemake.input.subsets}")
    # Seeds of the subset models are distinct streams derived from the base seed.
    overrides = {"steps": params.training["subset_steps"], "seed": stream_seed(params.training["seed"], "subset", subset, seed)}
settings = TrainingSettings.from_config(params.training, **overrides)

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
    with network_precision(params.precision, device):
        unet = train_diffusion_model(images, params.model["unet"], scheduler, settings, params.resume, progress, device)
except TrainingDivergedError as error:
    raise RuntimeError(f"training diverged for {name}: {error}; no model was written") from error

save_model(
    unet,
    scheduler,
    snakemake.output[0],
    {
        "model": name,
        "subset": subset,
        "seed": seed,
        "removed_from": removed,
        "removed_rows": [int(r) for r in removed_rows],
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
