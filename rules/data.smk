rule prepare_data:
    output:
        train=f"{PIXELS}/train.npz",
        heldout=f"{PIXELS}/heldout.npz",
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    conda:
        CONDA_ENV
    params:
        dataset=config["dataset"],
    script:
        # Latent mode writes the images for the VAE (data/pixels/).
        f"{STEPS}/prepare_images.py" if LATENT else f"{STEPS}/prepare_data.py"


if LATENT:

    # The training and held-out images' latents under the VAE, stored as the
    # data every later rule reads (ldsbench.latents).
    rule encode_latents:
        input:
            train=f"{PIXELS}/train.npz",
            heldout=f"{PIXELS}/heldout.npz",
            # Its modification time reruns the encoding when the VAE changes.
            weights=str(vae_weights_file()),
        output:
            train=f"{R}/data/train.npz",
            heldout=f"{R}/data/heldout.npz",
            provenance=f"{R}/data/latents.json",
        log:
            f"{R}/logs/encode_latents.log",
        benchmark:
            f"{R}/benchmarks/encode_latents.tsv"
        conda:
            CONDA_ENV
        threads: THREADS
        resources:
            gpu=GPUS_PER_JOB,
            mem_mb=job_mem_mb("encode_latents"),
        params:
            vae=VAE,
            device=config["runtime"]["device"],
            code=code_version("latents.py"),
        script:
            f"{STEPS}/encode_latents.py"


rule sample_subsets:
    input:
        train=f"{R}/data/train.npz",
    output:
        f"{R}/subsets.parquet",
    log:
        f"{R}/logs/sample_subsets.log",
    benchmark:
        f"{R}/benchmarks/sample_subsets.tsv"
    conda:
        CONDA_ENV
    params:
        benchmark=config["benchmark"],
    script:
        f"{STEPS}/sample_subsets.py"
