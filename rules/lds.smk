# One job per method computes its LDS on every measurement.


rule compute_lds:
    input:
        scores=[f"{R}/scores/{{method}}/{name}.npy" for name in MEASURED],
        sweeps=[f"{R}/scores/{{method}}/{name}.sweep.npz" for name in MEASURED],
        manifests=[f"{R}/scores/{{method}}/{name}.json" for name in MEASURED],
        subsets=f"{R}/subsets.parquet",
        ground_truth=[f"{R}/ground_truth/{name}.parquet" for name in MEASURED],
    output:
        per_query=[f"{R}/lds/{{method}}/{name}.parquet" for name in MEASURED],
        sweeps=[f"{R}/lds/{{method}}/{name}.sweep.parquet" for name in MEASURED],
    log:
        f"{R}/logs/lds/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/lds/{{method}}.tsv"
    conda:
        CONDA_ENV
    params:
        # The measurement of each input and output, in their order.
        measurements=MEASURED,
        n_subsets=M,
        n_seeds=K,
        code=code_version("lds.py", "provenance.py"),
    script:
        f"{STEPS}/compute_lds.py"


rule retraining_ceiling:
    input:
        ground_truth=f"{R}/ground_truth/{{measurement}}.parquet",
    output:
        per_query=f"{R}/lds/retraining_ceiling/{{measurement}}.parquet",
    log:
        f"{R}/logs/lds/retraining_ceiling/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/lds/retraining_ceiling/{{measurement}}.tsv"
    conda:
        CONDA_ENV
    params:
        code=code_version("lds.py"),
    script:
        f"{STEPS}/retraining_ceiling.py"


rule summarize:
    input:
        lds=lds_outputs(),
        sweeps=[f"{R}/lds/{m}/{s}.sweep.parquet" for m in METHODS for s in MEASUREMENTS],
    output:
        summary=f"{R}/lds_summary.parquet",
        per_query=f"{R}/lds_per_query.parquet",
        sweep=f"{R}/lds_sweep.parquet",
        plot=report(f"{R}/lds_summary.png", caption="../report/lds_summary.rst", category="LDS"),
        per_query_plot=report(f"{R}/lds_per_query.png", caption="../report/lds_per_query.rst", category="LDS"),
        sweep_plot=report(f"{R}/lds_vs_damping.png", caption="../report/lds_vs_damping.rst", category="LDS"),
        table=f"{R}/lds_summary.md",
    log:
        f"{R}/logs/summarize.log",
    benchmark:
        f"{R}/benchmarks/summarize.tsv"
    conda:
        CONDA_ENV
    params:
        n_subsets=M,
        n_seeds=K,
        orientation={name: MEASUREMENT_ORIENTATION[config["measurements"][name]["type"]] for name in sorted(MEASUREMENTS)},
        # The untuned value each method reports (damping or lambda).
        defaults={name: default_value(config["methods"][name]) for name in sorted(METHODS)},
        tuning=config["tuning"],
        code=code_version("lds.py", "plots.py", "tuning.py"),
    script:
        f"{STEPS}/summarize.py"
