# Retraining without the top influences (ldsbench.evaluation.removal): for each
# configured query, ranking method (and a random control) and fraction,
# retrain the full model K times without the k examples ranked as the
# query's proponents, measure the query, and regenerate it from its sampling
# noise. The all-data reference of seed 0 is the full model itself.


rule removal_set:
    input:
        unpack(removal_scores),
        train=f"{R}/data/train.npz",
    output:
        f"{R}/removal/sets/{{ranker}}/query_{{query}}/fraction_{{fraction}}.json",
    log:
        f"{R}/logs/removal/sets/{{ranker}}/query_{{query}}_fraction_{{fraction}}.log",
    benchmark:
        f"{R}/benchmarks/removal/sets/{{ranker}}/query_{{query}}_fraction_{{fraction}}.tsv"
    conda:
        CONDA_ENV
    params:
        fraction=lambda w: REMOVAL_FRACTIONS[w.fraction],
        orientation=orientation_of(config["measurements"][REMOVAL["measurement"]]),
        control_seed=REMOVAL["seed"],
        code=REMOVAL_SET_CODE_VERSION,
    script:
        f"{STEPS}/removal_set.py"


use rule train_full_model as train_removal_model with:
    input:
        train=f"{R}/data/train.npz",
        removed=f"{R}/removal/sets/{{ranker}}/query_{{query}}/fraction_{{fraction}}.json",
    output:
        directory(f"{R}/removal/models/{{ranker}}/query_{{query}}/fraction_{{fraction}}/seed_{{seed}}"),
    log:
        f"{R}/logs/removal/train/{{ranker}}/query_{{query}}_fraction_{{fraction}}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/removal/train/{{ranker}}/query_{{query}}_fraction_{{fraction}}_seed_{{seed}}.tsv"
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("train_removal_model"),
    params:
        kind="removal",
        seed=lambda w: int(w.seed),
        resume=lambda w: f"{R}/resume/removal/{w.ranker}/query_{w.query}/fraction_{w.fraction}/seed_{w.seed}",


# Every model measures all removal queries with the same draws (common
# random numbers keyed by position in removal.queries); only its target
# query is regenerated.
rule measure_removal_model:
    input:
        unpack(removal_images),
        model=f"{R}/removal/models/{{ranker}}/query_{{query}}/fraction_{{fraction}}/seed_{{seed}}",
        queries=f"{R}/queries/queries.npz",
    output:
        f"{R}/removal/measurements/{{ranker}}/query_{{query}}/fraction_{{fraction}}/seed_{{seed}}.parquet",
    log:
        f"{R}/logs/removal/measure/{{ranker}}/query_{{query}}_fraction_{{fraction}}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/removal/measure/{{ranker}}/query_{{query}}_fraction_{{fraction}}_seed_{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("measure_removal_model"),
    params:
        settings=config["measurements"][REMOVAL["measurement"]],
        measured=REMOVAL["queries"],
        regenerate=lambda w: [int(w.query)],
        sampling=config["queries"],
        device=config["runtime"]["device"],
        # Changes results: runtime.precision, compile and channels_last rerun the jobs they affect.
        precision=NETWORK_PASSES,
    script:
        f"{STEPS}/measure_removal.py"


# The all-data reference of each removal seed, measured the same way.
use rule measure_removal_model as measure_removal_reference with:
    input:
        unpack(removal_images),
        model=reference_model,
        queries=f"{R}/queries/queries.npz",
    output:
        f"{R}/removal/measurements/{ALL_DATA}/seed_{{seed}}.parquet",
    log:
        f"{R}/logs/removal/measure/{ALL_DATA}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/removal/measure/{ALL_DATA}_seed_{{seed}}.tsv"
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("measure_removal_reference"),
    params:
        regenerate=REMOVAL["queries"],


rule summarize_removal:
    input:
        measured=removal_measurements(),
        references=[f"{R}/removal/measurements/{ALL_DATA}/seed_{s}.parquet" for s in range(REMOVAL["seeds"])],
    output:
        changes=f"{R}/removal_changes.parquet",
        summary=f"{R}/removal_summary.parquet",
        table=f"{R}/removal_summary.md",
        plot=report(f"{R}/removal.png", caption="../report/removal.rst", category="Retraining without top influences"),
    log:
        f"{R}/logs/removal/summarize.log",
    benchmark:
        f"{R}/benchmarks/removal/summarize.tsv"
    conda:
        CONDA_ENV
    params:
        measurement=REMOVAL["measurement"],
        orientation=orientation_of(config["measurements"][REMOVAL["measurement"]]),
        code=code_version("summarize_removal.py", "evaluation.removal", "report.plots", "report.tables"),
    script:
        f"{STEPS}/summarize_removal.py"
