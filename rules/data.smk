rule prepare_data:
    output:
        train=f"{R}/data/train.npz",
        heldout=f"{R}/data/heldout.npz",
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    conda:
        CONDA_ENV
    params:
        dataset=config["dataset"],
    script:
        f"{STEPS}/prepare_data.py"


if LATENT:

    # Latent mode: the images, for the VAE (8-bit sources stay uint8), and
    # their latents, which become the data every later rule reads (the
    # latents' rule wins over prepare_data for data/train.npz).
    rule prepare_images:
        output:
            train=f"{PIXELS}/train.npz",
            heldout=f"{PIXELS}/heldout.npz",
        log:
            f"{R}/logs/prepare_images.log",
        benchmark:
            f"{R}/benchmarks/prepare_images.tsv"
        conda:
            CONDA_ENV
        params:
            dataset=config["dataset"],
        script:
            f"{STEPS}/prepare_images.py"

    ruleorder: encode_latents > prepare_data

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
            code=LATENT_CODE_VERSION,
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
