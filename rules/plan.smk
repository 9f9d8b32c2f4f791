# `snakemake plan`: what the configured benchmark will cost, before launch.
# One row per rule (per method for scoring): jobs, estimated peak memory per
# job on its device, passes per job, device-hours. The rates come from
# runtime.draws_per_second where it is set, otherwise from `calibrate`, which
# the plan then runs first.


# A few seconds of training steps and measurement passes of the configured
# UNet on the device a job gets (a GPU node under the SLURM profile). A
# change of model, batch, device or precision measures again.
rule calibrate:
    output:
        f"{R}/calibration.json",
    log:
        f"{R}/logs/calibrate.log",
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS_PER_JOB,
        mem_mb=max(job_mem_mb("train_full_model"), job_mem_mb("measure_model")),
    params:
        model=UNET_MODEL,
        training_batch=config["training"]["batch_size"],
        measurement_batch=measurement_batch(config),
        device=config["runtime"]["device"],
        precision=NETWORK_PASSES,
        min_seconds=CALIBRATION_SECONDS,
    script:
        f"{STEPS}/calibrate.py"


rule plan:
    input:
        calibration=[] if config["runtime"]["draws_per_second"] else f"{R}/calibration.json",
    output:
        f"{R}/plan.tsv",
    log:
        f"{R}/logs/plan.log",
    conda:
        CONDA_ENV
    params:
        rows=[asdict(row) for row in ESTIMATES.values()],
        draws_per_second=config["runtime"]["draws_per_second"],
        budget_bytes=BUDGET_BYTES,
        budget=f"{BUDGET_SETTING} = {BUDGET_BYTES / 2**30:g} GiB on {JOB_DEVICE}",
        setting=BUDGET_SETTING,
    script:
        f"{STEPS}/write_plan.py"
