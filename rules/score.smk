# One job per method scores every measurement: the training side (gradients,
# features, curvature) is computed once and each measurement adds only its
# query side. The method's own settings are its params, so changing one method
# reruns only that method's scores and LDS; changing how a measurement's
# query gradient is defined rescores every method (its draws do not).


rule score_method:
    input:
        model=f"{R}/models/full",
        train=f"{R}/data/train.npz",
        queries=f"{R}/queries/queries.npz",
        curvature=method_curvature,
        # A feature model is an input, so replacing its file rescores.
        feature_model=lambda w: config["methods"][w.method]["model_path"] if needs(config["methods"][w.method], "feature_model") else [],
        trajectory=lambda w: f"{R}/models/full_trajectory" if needs(config["methods"][w.method], "trajectory") else [],
        ensemble=ensemble_models,
        training_features=method_features,
        # Scores computed elsewhere (type scores_file): replacing a file rescores.
        score_files=lambda w: method_input_files(config["methods"][w.method], MEASURED),
    output:
        scores=[f"{R}/scores/{{method}}/{name}.npy" for name in MEASURED],
        sweeps=[f"{R}/scores/{{method}}/{name}.sweep.npz" for name in MEASURED],
        manifests=[f"{R}/scores/{{method}}/{name}.json" for name in MEASURED],
    log:
        f"{R}/logs/scores/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/scores/{{method}}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=lambda w: job_mem_mb(f"score_method[{w.method}]"),
    params:
        settings=method_settings,
        # Only what defines each query gradient (type, timestep, levels), so
        # changing a measurement's draws does not rescore.
        measurements={name: measurement_gradient_settings(config["measurements"][name]) for name in MEASURED},
        prefix=lambda w: f"{R}/scores/{w.method}",
        # The code of this method's type only (ldsbench.spec.method_types), so
        # editing one method rescores that method alone.
        code=scoring_code_version,
        # TracIn replays the full model's training.
        training=lambda w: FULL_TRAINING if needs(config["methods"][w.method], "training") else None,
        device=config["runtime"]["device"],
        # Changes results: runtime.precision (or scoring_precision) reruns the jobs it affects.
        precision=SCORING_PRECISION,
    script:
        f"{STEPS}/score_method.py"
