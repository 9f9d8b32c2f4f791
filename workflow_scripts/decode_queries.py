"""The queries as images: generated latents decoded by the VAE, held-out rows as the images they were encoded from."""

import numpy as np

from ldsbench.data.image_sets import load_image_set, to_unit_range
from ldsbench.data.latents import decode_latents, load_vae
from ldsbench.runtime.io import atomic_path
from ldsbench.runtime.jobs import select_device, start_job

log = start_job(snakemake)
settings = snakemake.params.vae
stored = np.load(snakemake.input.queries)
# In latent mode the queries file holds latents under "images".
latents, kinds = stored["images"], stored["kind"]
generated = np.flatnonzero(kinds == "generated")
heldout = load_image_set(snakemake.input.heldout).images
channels, size = heldout.shape[1], heldout.shape[2]
images = np.zeros((len(kinds), channels, size, size), dtype=np.float32)
if len(generated):
    vae = load_vae(settings["path"], select_device(snakemake.params.device))
    images[generated] = decode_latents(vae, latents[generated], settings["batch_size"])
# Held-out queries are the first rows of the held-out set (generate_queries).
held = np.flatnonzero(kinds == "heldout")
images[held] = to_unit_range(heldout[: len(held)])
with atomic_path(snakemake.output[0]) as tmp:
    with open(tmp, "wb") as handle:
        np.savez(handle, images=images, kind=kinds, source_index=stored["source_index"])
log.info("%s queries as images %s: %s decoded, %s held-out", len(kinds), images.shape[1:], len(generated), len(held))
