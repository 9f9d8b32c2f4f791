"""Measure a removal model (or an all-data reference) on the removal queries,
and regenerate generated queries from their own sampling noise."""

import numpy as np
import pandas as pd
import torch

from ldsbench.diffusion.passes import network_passes, prepare_network, release_network
from ldsbench.diffusion.sampling import ddpm_resample_rows
from ldsbench.measurement.estimators import estimate
from ldsbench.runtime.io import save_parquet
from ldsbench.runtime.jobs import load_model, select_device, start_job
from ldsbench.runtime.provenance import model_provenance, queries_sha256
from ldsbench.spec.measurement_types import measurement_type
from ldsbench.spec.training_runs import ALL_DATA

log = start_job(snakemake)
w, params = snakemake.wildcards, snakemake.params
settings, sampling = params.settings, params.sampling
spec = measurement_type(settings["type"])
device = select_device(params.device)
unet, scheduler, manifest = load_model(snakemake.input.model, device)
stored = np.load(snakemake.input.queries)
query_images, kinds = stored["images"], stored["kind"]
measured = [int(q) for q in params.measured]
ranker = w.get("ranker", ALL_DATA)
name = f"{ranker} model {snakemake.input.model}"

# The same queries in the same order on every model: the draws are keyed by
# position, so every model sees the same draws (common random numbers).
try:
    with network_passes(snakemake.params.precision, device) as passes:
        network = prepare_network(unet, passes) if spec.kind == "monte_carlo" else unet
        result = estimate(network, scheduler, torch.from_numpy(query_images[measured]).to(device), settings)
        release_network(unet, passes)  # the regeneration below runs the eager network in fp32
except RuntimeError as error:
    raise RuntimeError(f"measurement of {name}: {error}") from error

# Only generated queries have sampling noise to regenerate from.
image_l2 = {}
regenerate = [int(q) for q in params.regenerate if kinds[int(q)] == "generated"]
if regenerate:
    images = ddpm_resample_rows(unet, scheduler, regenerate, sampling["generated"], sampling["sampling_steps"], sampling["seed"]).numpy()
    originals = query_images
    if "images" in snakemake.input:
        # Latent diffusion: the distance is between decoded images.
        from pathlib import Path

        from ldsbench.data.latents import decode_latents, load_vae

        vae = load_vae(Path(snakemake.input.vae_weights).parent, device)
        images, originals = decode_latents(vae, images, len(images)), np.load(snakemake.input.images)["images"]
    for query, image in zip(regenerate, images):
        image_l2[query] = float(np.linalg.norm(image - originals[query]))
        log.info("query %s regenerated: L2 distance %.4f to the original", query, image_l2[query])

frame = pd.DataFrame(
    {
        "ranker": ranker,
        "target": int(w.get("query", -1)),
        "fraction": float(w.get("fraction", 0.0)),
        "k": len(manifest.get("removed_rows", [])),
        "seed": int(w.seed),
        "query": measured,
        "value": result.mean,
        "stderr": result.stderr,
        "draws": result.draws,
        "image_l2": [image_l2.get(q, np.nan) for q in measured],
        "orientation": spec.orientation,
        "unit": spec.unit,
    }
)
save_parquet(snakemake.output[0], frame, metadata={**model_provenance(manifest), "queries_sha256": queries_sha256(query_images)})
log.info("\n%s", frame.to_string())
