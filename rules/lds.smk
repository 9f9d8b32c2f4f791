rule compute_lds:
    input:
        scores=f"{R}/scores/{{method}}/{{measurement}}.npy",
        sweep=f"{R}/scores/{{method}}/{{measurement}}.sweep.npz",
        manifest=f"{R}/scores/{{method}}/{{measurement}}.json",
        subsets=f"{R}/subsets.parquet",
        ground_truth=f"{R}/ground_truth/{{measurement}}.parquet",
    output:
        per_query=f"{R}/lds/{{method}}/{{measurement}}.parquet",
        sweep=f"{R}/lds/{{method}}/{{measurement}}.sweep.parquet",
    params:
        n_subsets=M,
        n_seeds=K,
        code=code_version("lds.py", "provenance.py"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/lds/{{method}}/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/lds/{{method}}/{{measurement}}.tsv"
    script:
        f"{STEPS}/compute_lds.py"


rule retraining_ceiling:
    input:
        ground_truth=f"{R}/ground_truth/{{measurement}}.parquet",
    output:
        per_query=f"{R}/lds/retraining_ceiling/{{measurement}}.parquet",
    params:
        code=code_version("lds.py"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/lds/retraining_ceiling/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/lds/retraining_ceiling/{{measurement}}.tsv"
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
    params:
        n_subsets=M,
        n_seeds=K,
        orientation={name: MEASUREMENT_ORIENTATION[config["measurements"][name]["type"]] for name in sorted(MEASUREMENTS)},
        # The untuned value each method reports (damping or lambda).
        defaults={name: config["methods"][name].get("damping", config["methods"][name].get("lambda")) for name in sorted(METHODS)},
        tuning=config["tuning"],
        code=code_version("lds.py", "plots.py", "tuning.py"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/summarize.log",
    benchmark:
        f"{R}/benchmarks/summarize.tsv"
    script:
        f"{STEPS}/summarize.py"
