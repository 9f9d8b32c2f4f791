# Projected training features, one job per distinct feature set: methods
# whose training side is the same (model, output function, draws,
# projection) read one file. A method's lambda or query side is not part of
# the set, so changing it reruns that method's scoring only.


rule project_training_features:
    input:
        model=lambda w: f"{R}/models/{FEATURE_SETS[w.features]['model']}",
        train=f"{R}/data/train.npz",
    output:
        features=f"{R}/features/{{features}}.npy",
        manifest=f"{R}/features/{{features}}.json",
    log:
        f"{R}/logs/features/{{features}}.log",
    benchmark:
        f"{R}/benchmarks/features/{{features}}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=lambda w: job_mem_mb(f"project_training_features[{w.features}]"),
    params:
        settings=lambda w: FEATURE_SETS[w.features],
        code=code_version("project_training_features.py", "attribution.projected_features"),
        device=config["runtime"]["device"],
        # Changes results: runtime.precision (or scoring_precision) reruns the jobs it affects.
        precision=SCORING_PRECISION,
    script:
        f"{STEPS}/project_training_features.py"
