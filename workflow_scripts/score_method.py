"""Scores of one method for one measurement: [Q, N] plus its damping sweep."""

import json
from pathlib import Path

import numpy as np
import torch

from ldsbench.config import MEASUREMENT_ORIENTATION
from ldsbench.curvature import KroneckerEigenbasis
from ldsbench.das import das_scores
from ldsbench.data import load_image_set
from ldsbench.io import atomic_path, file_sha256, save_npy
from ldsbench.jobs import load_model, select_device, start_job
from ldsbench.measurement import measurement_output_fn
from ldsbench.provenance import model_provenance, queries_sha256, write_checksums
from ldsbench.scoring import influence_scores, random_scores, trak_scores
from ldsbench.similarity import feature_similarity, pixel_similarity, resolve_preprocessing, similarity_to_scores
from ldsbench.tracin import tracin_scores
from ldsbench.training import TrainingSettings

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
        modules=method["modules"],
    )
elif method["type"] == "trak":
    values = list(dict.fromkeys([method["lambda"], *method["lambda_grid"]]))
    scores = trak_scores(
        unet, scheduler, train, queries, values,
        measurement=snakemake.params.measurement, output_fn=method["output_fn"], projection_dim=method["projection_dim"],
        projection_seed=method["seed"], train_draws=method["train_draws"], query_draws=method["query_draws"], seed=method["seed"],
    )
elif method["type"] == "das":
    values = list(dict.fromkeys([method["lambda"], *method["lambda_grid"]]))
    scores = das_scores(
        unet, scheduler, train, queries, values,
        measurement=snakemake.params.measurement, output=method["output"], form=method["form"], output_directions=method["output_directions"],
        projection_dim=method["projection_dim"], projection_seed=method["seed"], train_draws=method["train_draws"], query_draws=method["query_draws"], seed=method["seed"],
    )
elif method["type"] == "tracin":
    trajectory = Path(snakemake.input.trajectory)
    steps = json.loads((trajectory / "trajectory.json").read_text())["steps"]
    checkpoints = {step: torch.load(trajectory / f"step_{step}.pt", map_location=device) for step in steps}
    settings = TrainingSettings.from_config(snakemake.params.training)
    values = [float("nan")]
    scores = tracin_scores(
        unet, scheduler, checkpoints, train, queries, settings,
        measurement_fn=measurement_output_fn(snakemake.params.measurement), query_draws=method["query_draws"], seed=method["seed"],
        normalize=method["normalize"], max_draws=method["draws_per_checkpoint"],
    )[None]
elif method["type"] in ("pixel_similarity", "feature_similarity"):
    # A similarity is not an effect: its sign comes from the measurement's
    # orientation (similar images are expected to improve the query), or
    # from the method's own `sign` (README, "Methods").
    orientation = MEASUREMENT_ORIENTATION[snakemake.params.measurement["type"]]
    if method["type"] == "pixel_similarity":
        similarity = pixel_similarity(queries, train, method["metric"])
    else:
        preprocessing = resolve_preprocessing(method["preset"], method["input_size"], method["mean"], method["std"])
        similarity = feature_similarity(queries, train, method["model_path"], preprocessing, metric=method["metric"], device=device)
    values, scores = [float("nan")], similarity_to_scores(similarity, orientation, method["sign"])[None].astype(np.float32)
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
provenance = {**model_provenance(manifest), "queries_sha256": queries_sha256(query_images)}
if method["type"] == "feature_similarity":
    provenance["feature_model_sha256"] = file_sha256(method["model_path"])
write_checksums(snakemake.output.manifest, outputs, provenance)
log.info("scores %s for %s values %s", scores.shape[1:], w.method, values)
