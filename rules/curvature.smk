rule fit_curvature:
    input:
        model=f"{R}/models/full",
        train=f"{R}/data/train.npz",
    output:
        f"{R}/curvature/{{curvature}}.pt",
    log:
        f"{R}/logs/curvature/{{curvature}}.log",
    benchmark:
        f"{R}/benchmarks/curvature/{{curvature}}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=lambda w: job_mem_mb(f"fit_curvature[{w.curvature}]"),
    params:
        settings=lambda w: CURVATURES[w.curvature],
        code=code_version("fit_curvature.py", "attribution.curvature", "attribution.curvature_data"),
        device=config["runtime"]["device"],
    script:
        f"{STEPS}/fit_curvature.py"
