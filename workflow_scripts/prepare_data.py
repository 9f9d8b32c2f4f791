"""Write the training set and held-out set files (train index = row number)."""

from ldsbench.data.image_sets import image_set_hash, load_dataset_split, save_image_set
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
train, heldout = load_dataset_split(snakemake.params.dataset)
save_image_set(snakemake.output.train, train)
save_image_set(snakemake.output.heldout, heldout)
log.info("train %s images %s (sha256 %s), heldout %s", len(train), train.images.shape[1:], image_set_hash(train), len(heldout))
