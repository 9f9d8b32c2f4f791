"""Measure one trained model on every query (common random numbers)."""

import numpy as np
import pandas as pd
import torch

from ldsbench.io import save_parquet
from ldsbench.jobs import load_model, select_device, start_job
from ldsbench.measurement import get_measurement, measure
from ldsbench.provenance import model_provenance, queries_sha256, rows_sha256

log = start_job(snakemake)
w, settings = snakemake.wildcards, snakemake.params.settings
device = select_device(snakemake.params.device)
unet, scheduler, manifest = load_model(snakemake.input.model, device)
query_images = np.load(snakemake.input.queries)["images"]
queries = torch.from_numpy(query_images).to(device)
try:
    mean, stderr = measure(unet, scheduler, queries, w.measurement, settings["draws"], settings["seed"])
except RuntimeError as error:
    raise RuntimeError(f"model subset {w.subset} seed {w.seed}: {error}") from error
frame = pd.DataFrame(
    {
        "subset": int(w.subset),
        "seed": int(w.seed),
        "query": np.arange(len(mean)),
        "value": mean,
        "stderr": stderr,
        "orientation": get_measurement(w.measurement).orientation,
    }
)
provenance = {
    **model_provenance(manifest),
    "queries_sha256": queries_sha256(query_images),
    "train_rows_sha256": rows_sha256(manifest["train_rows"]),
}
save_parquet(snakemake.output[0], frame, metadata=provenance)
log.info("mean %s %.5f, mean standard error %.5f", w.measurement, mean.mean(), stderr.mean())
