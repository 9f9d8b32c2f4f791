# One job per (method, measurement). The method's own settings are its params,
# so changing one method reruns only that method's scores and LDS.


def ensemble_models(wildcards):
    """A trak method's other full-data models (its `models` - 1 other seeds)."""
    method = config["methods"][wildcards.method]
    return [f"{R}/models/full_seed_{s}" for s in range(1, method.get("models", 1))] if method["type"] == "trak" else []


def method_settings(wildcards):
    """The method's config entry; Journey-TRAK also depends on how the
    generated queries were sampled (it replays their trajectories)."""
    method = config["methods"][wildcards.method]
    if method["type"] == "journey_trak":
        return {**method, "query_sampling": config["queries"]}
    return method


rule score_method:
    input:
        model=f"{R}/models/full",
        train=f"{R}/data/train.npz",
        queries=f"{R}/queries/queries.npz",
        curvature=method_curvature,
        # A feature model is an input, so replacing its file rescores.
        feature_model=lambda w: config["methods"][w.method].get("model_path", []),
        trajectory=lambda w: f"{R}/models/full_trajectory" if config["methods"][w.method]["type"] == "tracin" else [],
        ensemble=ensemble_models,
    output:
        scores=f"{R}/scores/{{method}}/{{measurement}}.npy",
        sweep=f"{R}/scores/{{method}}/{{measurement}}.sweep.npz",
        manifest=f"{R}/scores/{{method}}/{{measurement}}.json",
    params:
        settings=method_settings,
        # Only what defines the query gradient (type, timestep, levels), so
        # changing a measurement's draws does not rescore.
        measurement=lambda w: measurement_gradient_settings(config["measurements"][w.measurement]),
        # The code of this method's type only (ldsbench.method_types), so
        # editing one method rescores that method alone.
        code=lambda w: code_version("provenance.py", *scorer_modules(config["methods"][w.method]["type"])),
        # TracIn replays the full model's training.
        training=lambda w: FULL_TRAINING if config["methods"][w.method]["type"] == "tracin" else None,
        device=config["runtime"]["device"],
        # Changes results: runtime.precision reruns the jobs it affects.
        precision=config["runtime"]["precision"],
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=lambda w: job_mem_mb(f"score_method[{w.method}]"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/scores/{{method}}/{{measurement}}.log",
    benchmark:
        f"{R}/benchmarks/scores/{{method}}/{{measurement}}.tsv"
    script:
        f"{STEPS}/score_method.py"
