"""Scores of one method for one measurement: [Q, N] plus its damping sweep."""

import numpy as np
import torch

from ldsbench.curvature import KroneckerEigenbasis
from ldsbench.data import load_image_set
from ldsbench.io import atomic_path, save_npy
from ldsbench.jobs import load_model, select_device, start_job
from ldsbench.provenance import model_provenance, queries_sha256, write_checksums
from ldsbench.scoring import influence_scores, random_scores, trak_scores

log = start_job(snakemake)
method, w = snakemake.params.settings, snakemake.wildcards
device = select_device(snakemake.params.device)
unet, scheduler, manifest = load_model(snakemake.input.model, device)
train = torch.from_numpy(load_image_set(snakemake.input.train).images).to(device)
query_images = np.load(snakemake.input.queries)["images"]
queries = torch.from_numpy(query_images).to(device)

if method["type"] == "influence":
    values = list(dict.fromkeys([method["damping"], *method["damping_grid"]]))
    basis = KroneckerEigenbasis.load(snakemake.input.curvature)
    scores = influence_scores(
        unet, scheduler, train, queries, basis, values,
        measurement=snakemake.params.measurement, train_draws=method["train_draws"], query_draws=method["query_draws"], seed=method["seed"],
    )
elif method["type"] == "trak":
    values = list(dict.fromkeys([method["lambda"], *method["lambda_grid"]]))
    scores = trak_scores(
        unet, scheduler, train, queries, values,
        measurement=snakemake.params.measurement, output_fn=method["output_fn"], projection_dim=method["projection_dim"],
        projection_seed=method["seed"], train_draws=method["train_draws"], query_draws=method["query_draws"], seed=method["seed"],
    )
elif method["type"] == "random":
    values, scores = [float("nan")], random_scores(len(queries), len(train), method["seed"])
else:
    raise ValueError(f"methods.{w.method}.type: unknown method type {method['type']!r}")

if not np.isfinite(scores).all():
    raise RuntimeError(f"method {w.method}: scores contain NaN or infinite values")
save_npy(snakemake.output.scores, scores[0])
with atomic_path(snakemake.output.sweep) as tmp:
    with open(tmp, "wb") as handle:
        np.savez(handle, values=np.asarray(values, dtype=np.float64), scores=scores[1:], grid_values=np.asarray(values[1:], dtype=np.float64))
# Written last: a score file with a manifest is complete and checksummed.
outputs = {"scores": snakemake.output.scores, "sweep": snakemake.output.sweep}
write_checksums(snakemake.output.manifest, outputs, {**model_provenance(manifest), "queries_sha256": queries_sha256(query_images)})
log.info("scores %s for %s values %s", scores.shape[1:], w.method, values)
