"""Queries with their most positive and most negative training examples under each method."""

import numpy as np

from ldsbench.data.image_sets import load_image_set
from ldsbench.report.image_grid import plot_attribution_grid
from ldsbench.runtime.io import atomic_path
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
params = snakemake.params
train = load_image_set(snakemake.input.train).images
queries = np.load(snakemake.input.queries)["images"]
scores = {method: np.load(path) for method, path in zip(params.methods, snakemake.input.scores, strict=True)}
with atomic_path(snakemake.output[0]) as tmp:
    plot_attribution_grid(queries, train, scores, params.queries, params.examples, tmp, params.measurement)
log.info("grid of queries %s for methods %s on %s", params.queries, params.methods, params.measurement)
