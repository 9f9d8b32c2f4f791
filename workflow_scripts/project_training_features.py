"""Projected training features of one model (``ldsbench.attribution.projected_features``),
read by every method whose feature settings they are."""

import torch

from ldsbench.attribution.projected_features import feature_batch, features_of, save_training_features
from ldsbench.data.image_sets import load_image_set
from ldsbench.diffusion.precision import network_precision
from ldsbench.planning.plan import job_budget
from ldsbench.runtime.jobs import load_model, select_device, start_job
from ldsbench.runtime.provenance import model_provenance

log = start_job(snakemake)
settings = snakemake.params.settings
device = select_device(snakemake.params.device)
# The budget is read from the config, not a param: changing it reruns nothing.
runtime = snakemake.config["runtime"]
budget_bytes, budget_setting = job_budget(runtime, device.type)
unet, scheduler, manifest = load_model(snakemake.input.model, device)
train = torch.from_numpy(load_image_set(snakemake.input.train).images).to(device)
batch = feature_batch(
    unet, settings, n_train=len(train), budget_bytes=budget_bytes, budget_setting=budget_setting, draws_per_pass=runtime["gradient_draws_per_pass"]
)
log.info("projecting %s training gradients of %s, batches of %s", len(train), settings, batch)
with network_precision(snakemake.params.precision, device):
    features = features_of(unet, scheduler, train, settings, batch_examples=batch, draws_per_pass=runtime["gradient_draws_per_pass"])
provenance = {**model_provenance(manifest), "weights_sha256": manifest["weights_sha256"]}
save_training_features(snakemake.output.features, snakemake.output.manifest, features, settings, provenance)
log.info("features %s, mean squared norm %.4g", tuple(features.shape), float(features.square().sum(1).mean()))
