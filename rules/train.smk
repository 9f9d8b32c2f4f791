# Resume state lives under {R}/resume/, which is not a declared output:
# Snakemake deletes declared outputs before a job runs, so a killed training
# continues from its last checkpoint when re-run.


# Every training rule runs train_model.py; `kind` says which run it is
# (ldsbench.spec.training_runs), and the other rules differ from this one only
# in their indices, paths and inputs.
rule train_full_model:
    input:
        train=f"{R}/data/train.npz",
    output:
        directory(f"{R}/models/full"),
    log:
        f"{R}/logs/train/full.log",
    benchmark:
        f"{R}/benchmarks/train/full.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("train_full_model"),
    params:
        kind="full",
        model=UNET_MODEL,
        training=FULL_TRAINING,
        resume=f"{R}/resume/full",
        device=config["runtime"]["device"],
        # Changes results: runtime.precision, compile and channels_last rerun the jobs they affect.
        precision=NETWORK_PASSES,
    script:
        f"{STEPS}/train_model.py"


# Full-data models of other training seeds: TRAK ensembles (a trak method's
# `models`) and the all-data references of the removal branch (seed 0 is
# models/full itself).
use rule train_full_model as train_full_model_seed with:
    output:
        directory(f"{R}/models/full_seed_{{seed}}"),
    log:
        f"{R}/logs/train/full_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/full_seed_{{seed}}.tsv"
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("train_full_model_seed"),
    params:
        kind="full_seed",
        seed=lambda w: int(w.seed),
        resume=lambda w: f"{R}/resume/full_seed_{w.seed}",


use rule train_full_model as train_subset_model with:
    input:
        train=f"{R}/data/train.npz",
        subsets=f"{R}/subsets.parquet",
    output:
        directory(f"{R}/models/subset_{{subset}}/seed_{{seed}}"),
    log:
        f"{R}/logs/train/subset_{{subset}}_seed_{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/subset_{{subset}}_seed_{{seed}}.tsv"
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("train_subset_model"),
    params:
        kind="subset",
        training=SUBSET_TRAINING,
        subset=lambda w: int(w.subset),
        seed=lambda w: int(w.seed),
        resume=lambda w: f"{R}/resume/subset_{w.subset}/seed_{w.seed}",


# The full model's training replayed with its raw weights kept at every
# checkpoint (for TracIn-type methods). Training is deterministic per step,
# so this is the full model's own trajectory; the job checks that its final
# EMA weights equal the full model's.
rule trace_full_training:
    input:
        train=f"{R}/data/train.npz",
        model=f"{R}/models/full",
    output:
        directory(f"{R}/models/full_trajectory"),
    log:
        f"{R}/logs/train/full_trajectory.log",
    benchmark:
        f"{R}/benchmarks/train/full_trajectory.tsv"
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=job_mem_mb("trace_full_training"),
    params:
        model=UNET_MODEL,
        training=FULL_TRAINING,
        resume=f"{R}/resume/full_trajectory",
        device=config["runtime"]["device"],
        # Changes results: runtime.precision, compile and channels_last rerun the jobs they affect.
        precision=NETWORK_PASSES,
    script:
        f"{STEPS}/trace_full_training.py"
