# `snakemake plan`: what the configured benchmark will cost, before launch.
# One row per rule (per method for scoring): jobs, estimated peak memory per
# job on its device, passes per job, device-hours at runtime.draws_per_second.


rule plan:
    output:
        f"{R}/plan.tsv",
    params:
        draws_per_second=config["runtime"]["draws_per_second"],
        budget=f"{BUDGET_SETTING} = {BUDGET_BYTES / 2**30:g} GiB on {JOB_DEVICE}",
    log:
        f"{R}/logs/plan.log",
    run:
        from ldsbench.plan import plan_table

        table = plan_table(list(ESTIMATES.values()), params.draws_per_second)
        table.to_csv(output[0], sep="\t", index=False)
        text = table.to_string(index=False)
        over = over_budget(list(ESTIMATES.values()), BUDGET_BYTES, BUDGET_SETTING)
        text += f"\n\nbudget per job: {params.budget}; " + ("over budget:\n  " + "\n  ".join(over) if over else "every job fits") + "\n"
        Path(log[0]).write_text(text)
        print(text)
