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
        predictions=[f"{R}/lds/{{method}}/{name}.predictions.npz" for name in MEASURED],
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
        # The name of the swept value in lds_sweep.parquet (damping or lambda).
        hyperparameter=lambda w: hyperparameter_name(config["methods"][w.method]),
        code=code_version("compute_lds.py", "evaluation.method_lds", "evaluation.ground_truth"),
    script:
        f"{STEPS}/compute_lds.py"


# One job per measurement compares every method on it: the bootstrap that
# pairs them resamples the same subsets and queries for all.
rule compare_methods:
    input:
        predictions=[f"{R}/lds/{method}/{{measurement}}.predictions.npz" for method in METHODS],
        ground_truth=f"{R}/ground_truth/{{measurement}}.parquet",
    output:
        summary=f"{R}/comparison/{{measurement}}.parquet",
        paired=f"{R}/comparison/{{measurement}}.paired.parquet",
        per_query=f"{R}/comparison/{{measurement}}.per_query.parquet",
    log:
        f"{R}/logs/comparison/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/comparison/{{measurement}}.tsv"
    conda:
        CONDA_ENV
    params:
        # The method of each predictions input, in their order.
        methods=list(METHODS),
        orientation=lambda wildcards: orientation_of(config["measurements"][wildcards.measurement]),
        n_subsets=M,
        n_seeds=K,
        tuning=config["tuning"],
        statistics=config["statistics"],
        code=code_version("compare_methods.py", "evaluation.measurement_comparison", "evaluation.ground_truth"),
    script:
        f"{STEPS}/compare_methods.py"


rule summarize:
    input:
        comparisons=[f"{R}/comparison/{name}.parquet" for name in MEASURED],
        paired=[f"{R}/comparison/{name}.paired.parquet" for name in MEASURED],
        tuned_per_query=[f"{R}/comparison/{name}.per_query.parquet" for name in MEASURED],
        lds=[f"{R}/lds/{m}/{s}.parquet" for m in METHODS for s in MEASURED],
        sweeps=[f"{R}/lds/{m}/{s}.sweep.parquet" for m in METHODS for s in MEASURED],
        # Measured wall times of each method's scoring and feature jobs: the summary's cost columns.
        scoring_times=sorted({path for m in METHODS for path in method_time_files(m)}),
    output:
        summary=f"{R}/lds_summary.parquet",
        per_query=f"{R}/lds_per_query.parquet",
        sweep=f"{R}/lds_sweep.parquet",
        paired=f"{R}/lds_paired.parquet",
        plot=report(f"{R}/lds_summary.png", caption="../report/lds_summary.rst", category="LDS"),
        paired_plot=report(f"{R}/lds_paired.png", caption="../report/lds_paired.rst", category="LDS"),
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
        methods=list(METHODS),
        measurements=list(MEASUREMENTS),
        level=config["statistics"]["level"],
        # Forward+backward passes of one draw per method (its scoring job and
        # the feature jobs it reads), as the plan estimates them.
        gradient_passes={m: method_passes(m, config, ESTIMATES) for m in METHODS},
        time_files={m: method_time_files(m) for m in METHODS},
        code=code_version("summarize.py", "evaluation.lds", "report.plots", "report.tables"),
    script:
        f"{STEPS}/summarize.py"
