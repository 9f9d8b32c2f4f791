"""Sample the M training subsets once, from a seeded generator."""

from ldsbench.data.image_sets import load_image_set
from ldsbench.data.subsets import sample_subsets, subsets_to_frame
from ldsbench.runtime.io import save_parquet
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
settings = snakemake.params.benchmark
train = load_image_set(snakemake.input.train)
mask = sample_subsets(len(train), settings["subsets"], settings["fraction"], settings["seed"], train.labels if settings["stratified"] else None)
save_parquet(snakemake.output[0], subsets_to_frame(mask))
log.info("%s subsets of %s / %s examples", mask.shape[0], int(mask[0].sum()), mask.shape[1])
