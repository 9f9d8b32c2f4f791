"""Encode the training and held-out images with the VAE; the latents become the data every later rule reads."""

from ldsbench.data.image_sets import ImageSet, image_set_hash, load_image_set, save_image_set
from ldsbench.data.latents import encode_images, load_vae, scale_and_shift, weights_sha256
from ldsbench.runtime.io import save_json
from ldsbench.runtime.jobs import select_device, start_job

log = start_job(snakemake)
settings = snakemake.params.vae
device = select_device(snakemake.params.device)
vae = load_vae(settings["path"], device)
provenance = {"vae_path": settings["path"], "vae_weights_sha256": weights_sha256(settings["path"]), "latents": settings["latents"]}
scale, shift = scale_and_shift(vae)
provenance.update(seed=settings["seed"], scaling_factor=scale, shift_factor=shift)
for split in ("train", "heldout"):
    images = load_image_set(snakemake.input[split])
    latents = encode_images(vae, images.images, settings["latents"], settings["seed"], split, settings["batch_size"])
    encoded = ImageSet(latents, images.labels, images.source_index, images.source_path)
    save_image_set(snakemake.output[split], encoded)
    provenance[f"{split}_images_sha256"] = image_set_hash(images)
    provenance[f"{split}_latents_sha256"] = image_set_hash(encoded)
    log.info(
        "%s: %s images %s -> latents %s (mean %.3f, std %.3f)", split, len(images), images.images.shape[1:], latents.shape[1:], latents.mean(), latents.std()
    )
save_json(snakemake.output.provenance, provenance)
