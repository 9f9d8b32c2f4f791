"""`snakemake calibrate`: measure the configured UNet's training and forward
rates on this job's device (``ldsbench.planning.throughput``) for the plan."""

import json
from pathlib import Path

from ldsbench.planning.throughput import measure_rates
from ldsbench.runtime.jobs import select_device, start_job

log = start_job(snakemake)
params = snakemake.params
device = select_device(params.device)
rates = measure_rates(params.model, device, params.precision, params.training_batch, params.measurement_batch, params.min_seconds)
log.info("rates: %s", rates)
Path(snakemake.output[0]).write_text(json.dumps(rates, indent=2) + "\n")
