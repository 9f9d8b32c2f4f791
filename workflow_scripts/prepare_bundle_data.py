"""The training set of a bundle that may not carry it (CIFAR), prepared from
the receiver's copy of the dataset and checked against the producer's."""

from ldsbench.data.image_sets import image_set_hash, load_dataset_split, save_image_set
from ldsbench.runtime.jobs import start_job

log = start_job(snakemake)
train, _ = load_dataset_split(snakemake.params.dataset)
found = image_set_hash(train)
if found != snakemake.params.images_sha256:
    raise RuntimeError(
        f"the training set prepared from dataset.path {snakemake.params.dataset.get('path')} hashes to {found}, but the bundle's was "
        f"{snakemake.params.images_sha256}: this copy of the dataset differs from the one the benchmark was trained on"
    )
save_image_set(snakemake.output.train, train)
log.info("train %s images, sha256 %s as in the bundle", len(train), found)
