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
