"""Queries: DDPM samples of the full model, then optional held-out images."""

import numpy as np

from ldsbench.data.image_sets import load_image_set
from ldsbench.diffusion.sampling import ddpm_sample
from ldsbench.runtime.io import atomic_path
from ldsbench.runtime.jobs import load_model, select_device, start_job

log = start_job(snakemake)
settings = snakemake.params.queries
device = select_device(snakemake.params.device)
unet, scheduler, _ = load_model(snakemake.input.model, device)
images, kinds, sources = [], [], []
if settings["generated"]:
    generated = ddpm_sample(unet, scheduler, settings["generated"], settings["sampling_steps"], settings["seed"])
    images.append(generated.cpu().numpy())
    kinds += ["generated"] * settings["generated"]
    sources += [-1] * settings["generated"]
if settings["heldout"]:
    heldout = load_image_set(snakemake.input.heldout)
    images.append(heldout.images[: settings["heldout"]])
    kinds += ["heldout"] * settings["heldout"]
    sources += heldout.source_index[: settings["heldout"]].tolist()
with atomic_path(snakemake.output[0]) as tmp:
    with open(tmp, "wb") as handle:
        np.savez(handle, images=np.concatenate(images).astype(np.float32), kind=np.array(kinds), source_index=np.array(sources))
log.info("%s queries (%s generated, %s held-out)", len(kinds), settings["generated"], settings["heldout"])
