"""Measure one trained model on every query, for every configured
measurement (common random numbers within each measurement)."""

import numpy as np
import pandas as pd
import torch

from ldsbench.diffusion.passes import measuring_network, network_passes, prepare_network
from ldsbench.measurement.estimators import estimate
from ldsbench.runtime.io import save_parquet
from ldsbench.runtime.jobs import load_model, select_device, start_job
from ldsbench.runtime.provenance import model_provenance, queries_sha256, rows_sha256
from ldsbench.spec.measurement_types import measurement_type

log = start_job(snakemake)
w = snakemake.wildcards
device = select_device(snakemake.params.device)
unet, scheduler, manifest = load_model(snakemake.input.model, device)
query_images = np.load(snakemake.input.queries)["images"]
queries = torch.from_numpy(query_images).to(device)
provenance = {
    **model_provenance(manifest),
    "queries_sha256": queries_sha256(query_images),
    "train_rows_sha256": rows_sha256(manifest["train_rows"]),
}
with network_passes(snakemake.params.precision, device) as passes:
    network = prepare_network(unet, passes)
for (name, settings), path in zip(snakemake.params.settings.items(), snakemake.output, strict=True):
    spec = measurement_type(settings["type"])
    try:
        with network_passes(snakemake.params.precision, device):
            result = estimate(measuring_network(unet, network, settings), scheduler, queries, settings)
    except RuntimeError as error:
        raise RuntimeError(f"measurement {name}, model subset {w.subset} seed {w.seed}: {error}") from error
    frame = pd.DataFrame(
        {
            "subset": int(w.subset),
            "seed": int(w.seed),
            "query": np.arange(len(result.mean)),
            "value": result.mean,
            "stderr": result.stderr,
            "draws": result.draws,
            "orientation": spec.orientation,
            "unit": spec.unit,
        }
    )
    save_parquet(path, frame, metadata=provenance)
    log.info(
        "%s (%s, %s, %s): mean %.5f, mean standard error %.5f, draws per query %d..%d",
        name,
        spec.name,
        spec.unit,
        spec.orientation,
        result.mean.mean(),
        result.stderr.mean(),
        result.draws.min(),
        result.draws.max(),
    )
