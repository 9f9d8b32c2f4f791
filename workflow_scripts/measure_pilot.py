"""Measure one pilot model on every query for every measurement, keeping each
replicate's mean (``ldsbench.measurement.draw_precision``)."""

import numpy as np
import torch

from ldsbench.diffusion.passes import measuring_network, network_passes, prepare_network
from ldsbench.measurement.estimators import estimate, measurement_design
from ldsbench.runtime.io import atomic_path
from ldsbench.runtime.jobs import load_model, select_device, start_job

log = start_job(snakemake)
params = snakemake.params
device = select_device(params.device)
unet, scheduler, _ = load_model(snakemake.input.model, device)
queries = torch.from_numpy(np.load(snakemake.input.queries)["images"]).to(device)
with network_passes(params.precision, device) as passes:
    network = prepare_network(unet, passes)
arrays = {}
for name, settings in params.settings.items():
    size = measurement_design(settings).replicate_size
    if params.pilot_replicates is not None:
        # Fixed draws: the pilot's own count of whole replicates.
        settings = {**settings, "draws": params.pilot_replicates * size, "target_stderr": None, "max_draws": None}
    with network_passes(params.precision, device):
        result = estimate(measuring_network(unet, network, settings), scheduler, queries, settings, keep_replicates=True)
    arrays[f"{name}.replicates"] = result.replicates
    arrays[f"{name}.replicate_size"] = np.int64(size)
    log.info("%s: %d replicates of %d draws per query", name, result.replicates.shape[1], size)
with atomic_path(snakemake.output[0]) as tmp:
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
