"""Scores of one method for every measurement: [Q, N] per measurement plus
its damping sweep, from one pass over the training side."""

import numpy as np
import torch

from ldsbench.data.image_sets import load_image_set
from ldsbench.diffusion.precision import network_precision
from ldsbench.planning.plan import job_budget
from ldsbench.runtime.fingerprints import benchmark_fingerprint
from ldsbench.runtime.io import atomic_path, file_sha256, save_npy
from ldsbench.runtime.jobs import load_model, select_device, start_job
from ldsbench.runtime.provenance import model_provenance, queries_sha256, write_checksums
from ldsbench.spec.method_types import ScoringJob, needs, scorer

log = start_job(snakemake)
method, w = snakemake.params.settings, snakemake.wildcards
device = select_device(snakemake.params.device)
# The budget is read from the config, not a param: changing it reruns nothing.
runtime = snakemake.config["runtime"]
budget_bytes, budget_setting = job_budget(runtime, device.type)
unet, scheduler, manifest = load_model(snakemake.input.model, device)
query_images = np.load(snakemake.input.queries)["images"]
provenance = {**model_provenance(manifest), "queries_sha256": queries_sha256(query_images)}
job = ScoringJob(
    unet=unet,
    scheduler=scheduler,
    train=torch.from_numpy(load_image_set(snakemake.input.train).images).to(device),
    queries=torch.from_numpy(query_images).to(device),
    method=method,
    measurements=snakemake.params.measurements,
    inputs={
        "queries": snakemake.input.queries,
        **{name: snakemake.input[name] for name in ("curvature", "trajectory") if snakemake.input.get(name)},
        "ensemble": list(snakemake.input.get("ensemble", [])),
        "training_features": list(snakemake.input.get("training_features", [])),
    },
    training=snakemake.params.training,
    device=device,
    budget_bytes=budget_bytes,
    budget_setting=budget_setting,
    draws_per_pass=runtime["gradient_draws_per_pass"],
    model_manifest=manifest,
    name=w.method,
    benchmark=benchmark_fingerprint(provenance),
)
with network_precision(snakemake.params.precision, device):
    values, scores = scorer(method["type"])(job)

if needs(method, "feature_model"):
    provenance["feature_model_sha256"] = file_sha256(method["model_path"])
for name in snakemake.params.measurements:
    measured = scores[name]
    if not np.isfinite(measured).all():
        raise RuntimeError(f"method {w.method}, measurement {name}: scores contain NaN or infinite values")
for name in snakemake.params.measurements:
    measured, outputs = scores[name], {"scores": f"{snakemake.params.prefix}/{name}.npy", "sweep": f"{snakemake.params.prefix}/{name}.sweep.npz"}
    save_npy(outputs["scores"], measured[0])
    with atomic_path(outputs["sweep"]) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, values=np.asarray(values, dtype=np.float64), scores=measured[1:], grid_values=np.asarray(values[1:], dtype=np.float64))
    # Written last: a score file with a manifest is complete and checksummed.
    write_checksums(f"{snakemake.params.prefix}/{name}.json", outputs, provenance)
    log.info("scores %s for %s on %s, values %s", measured.shape[1:], w.method, name, values)
