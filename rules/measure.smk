# One job per model measures every configured measurement of it: the model is
# loaded once, not once per measurement (a job's start costs seconds). Each
# measurement keeps its own file, so the ground truth is per measurement; a
# change to any measurement's settings remeasures every measurement of every
# model (the cheaper trade: measuring is a fraction of one retraining).


rule measure_model:
    input:
        model=f"{R}/models/subset_{{subset}}/seed_{{seed}}",
        queries=f"{R}/queries/queries.npz",
    output:
        [f"{R}/measurements/{name}/subset_{{subset}}_seed_{{seed}}.parquet" for name in MEASURED],
    log:
        f"{R}/logs/measure/subset_{{subset}}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/measure/subset_{{subset}}_seed_{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("measure_model"),
    params:
        # Every measurement's config entry, in the order of the outputs.
        settings={name: config["measurements"][name] for name in MEASURED},
        device=config["runtime"]["device"],
        # Changes results: runtime.precision, compile and channels_last rerun the jobs they affect.
        precision=NETWORK_PASSES,
    script:
        f"{STEPS}/measure_model.py"


rule collect_ground_truth:
    input:
        subsets=f"{R}/subsets.parquet",
        measurements=lambda w: [f"{R}/measurements/{w.measurement}/subset_{j}_seed_{k}.parquet" for j in range(M) for k in range(K)],
    output:
        f"{R}/ground_truth/{{measurement}}.parquet",
    log:
        f"{R}/logs/ground_truth/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/ground_truth/{{measurement}}.tsv"
    conda:
        CONDA_ENV
    params:
        # (subset, seed) of each measurement file, in input order.
        models=[(j, k) for j in range(M) for k in range(K)],
        code=code_version("collect_ground_truth.py", "runtime.provenance"),
    script:
        f"{STEPS}/collect_ground_truth.py"
