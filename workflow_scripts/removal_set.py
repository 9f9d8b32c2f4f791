"""The training rows removed for one (ranker, query, fraction): a method's
top proponents of the query, or the random control's draw."""

import numpy as np

from ldsbench.data.image_sets import load_image_set
from ldsbench.evaluation.removal import random_removal, removal_size, top_proponents
from ldsbench.runtime.io import save_json
from ldsbench.runtime.jobs import start_job
from ldsbench.runtime.provenance import verify_checksums
from ldsbench.spec.training_runs import RANDOM_CONTROL

log = start_job(snakemake)
w, params = snakemake.wildcards, snakemake.params
query = int(w.query)
n_train = len(load_image_set(snakemake.input.train))
k = removal_size(n_train, params.fraction)
record = {"ranker": w.ranker, "query": query, "fraction": params.fraction, "k": k, "orientation": params.orientation}
if w.ranker == RANDOM_CONTROL:
    removed = random_removal(n_train, k, params.control_seed, query)
    record["control_seed"] = params.control_seed
else:
    verify_checksums(snakemake.input.manifest, {"scores": snakemake.input.scores})
    scores = np.load(snakemake.input.scores)
    if scores.shape[1] != n_train:
        raise ValueError(f"{snakemake.input.scores} scores {scores.shape[1]} training examples but the training set has {n_train}")
    if query >= scores.shape[0]:
        raise ValueError(f"query {query} is not a row of {snakemake.input.scores} ({scores.shape[0]} queries)")
    removed = top_proponents(scores[query], k, params.orientation)
    record["scores"] = scores[query, removed].astype(float).tolist()
record["removed"] = removed.tolist()
save_json(snakemake.output[0], record)
log.info("%s, query %s: removing %s of %s examples: %s", w.ranker, query, k, n_train, removed.tolist())
