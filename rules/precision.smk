# `snakemake draw_precision`: how many measurement draws the LDS needs
# (ldsbench.measurement.draw_precision). The pilot's models are measured
# again, keeping each replicate; nothing here is an input of the LDS.

PILOT_SUBSETS = config["draw_precision"]["pilot_subsets"] or min(8, M)


rule measure_pilot:
    input:
        model=f"{R}/models/subset_{{subset}}/seed_{{seed}}",
        queries=f"{R}/queries/queries.npz",
    output:
        f"{R}/draw_precision/replicates/subset_{{subset}}_seed_{{seed}}.npz",
    log:
        f"{R}/logs/draw_precision/subset_{{subset}}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/draw_precision/subset_{{subset}}_seed_{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("measure_model"),
    params:
        settings={name: config["measurements"][name] for name in MEASURED},
        pilot_replicates=config["draw_precision"]["pilot_replicates"],
        device=config["runtime"]["device"],
        precision=NETWORK_PASSES,
    script:
        f"{STEPS}/measure_pilot.py"


rule draw_precision:
    input:
        replicates=[f"{R}/draw_precision/replicates/subset_{j}_seed_{k}.npz" for j in range(PILOT_SUBSETS) for k in range(K)],
    output:
        per_query=f"{R}/draw_precision/per_query.parquet",
        summary=f"{R}/draw_precision/summary.parquet",
        table=f"{R}/draw_precision/summary.md",
        overlay=f"{R}/draw_precision/measurements.yaml",
    log:
        f"{R}/logs/draw_precision/summary.log",
    conda:
        CONDA_ENV
    params:
        models=[(j, k) for j in range(PILOT_SUBSETS) for k in range(K)],
        measurements=MEASURED,
        # In the configured order, which the recommendation's config file keeps.
        configured_draws={name: config["measurements"][name]["draws"] for name in MEASUREMENTS},
        target_share=config["draw_precision"]["target_share"],
    script:
        f"{STEPS}/write_draw_precision.py"
