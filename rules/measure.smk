# One job per (measurement, model). The measurement's config entry is the
# job's params, so changing one measurement remeasures only that one.


rule measure_model:
    input:
        model=f"{R}/models/subset_{{subset}}/seed_{{seed}}",
        queries=f"{R}/queries/queries.npz",
    output:
        f"{R}/measurements/{{measurement}}/subset_{{subset}}_seed_{{seed}}.parquet",
    params:
        settings=lambda w: config["measurements"][w.measurement],
        device=config["runtime"]["device"],
        # Changes results: runtime.precision reruns the jobs it affects.
        precision=config["runtime"]["precision"],
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("measure_model"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/measure/{{measurement}}/subset_{{subset}}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/measure/{{measurement}}/subset_{{subset}}_seed_{{seed}}.tsv"
    script:
        f"{STEPS}/measure_model.py"


rule collect_ground_truth:
    input:
        subsets=f"{R}/subsets.parquet",
        measurements=lambda w: [
            f"{R}/measurements/{w.measurement}/subset_{j}_seed_{k}.parquet"
            for j in range(M)
            for k in range(K)
        ],
    output:
        f"{R}/ground_truth/{{measurement}}.parquet",
    params:
        # (subset, seed) of each measurement file, in input order.
        models=[(j, k) for j in range(M) for k in range(K)],
        code=code_version("provenance.py"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/ground_truth/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/ground_truth/{{measurement}}.tsv"
    script:
        f"{STEPS}/collect_ground_truth.py"
