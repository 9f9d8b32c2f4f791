# `snakemake plan`: what the configured benchmark will cost, before launch.
# One row per rule (per method for scoring): jobs, estimated peak memory per
# job on its device, passes per job, device-hours at runtime.draws_per_second.


rule plan:
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
