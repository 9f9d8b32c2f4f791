rule generate_queries:
    input:
        model=f"{R}/models/full",
        heldout=f"{R}/data/heldout.npz",
    output:
        f"{R}/queries/queries.npz",
    log:
        f"{R}/logs/generate_queries.log",
    benchmark:
        f"{R}/benchmarks/generate_queries.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("generate_queries"),
    params:
        queries=config["queries"],
        device=config["runtime"]["device"],
    script:
        f"{STEPS}/generate_queries.py"


if LATENT:

    # The queries as images: generated ones decoded by the VAE, held-out
    # ones as they were before encoding (the attribution grid and the
    # removal branch's image distances show and compare these).
    rule decode_queries:
        input:
            queries=f"{R}/queries/queries.npz",
            heldout=f"{PIXELS}/heldout.npz",
            weights=str(vae_weights_file()),
        output:
            QUERY_IMAGES,
        log:
            f"{R}/logs/decode_queries.log",
        benchmark:
            f"{R}/benchmarks/decode_queries.tsv"
        conda:
            CONDA_ENV
        threads: THREADS
        resources:
            gpu=GPUS_PER_JOB,
            mem_mb=job_mem_mb("decode_queries"),
        params:
            vae=VAE,
            device=config["runtime"]["device"],
            code=LATENT_CODE_VERSION,
        script:
            f"{STEPS}/decode_queries.py"
