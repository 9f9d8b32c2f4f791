"""`snakemake plan`: write and print the plan table (``ldsbench.planning.plan``)."""

from pathlib import Path

from ldsbench.planning.plan import JobEstimate, device_rates, over_budget, plan_table, read_calibration

params = snakemake.params
rows = [JobEstimate(**row) for row in params.rows]
calibration = snakemake.input.get("calibration")
rates = device_rates(params.draws_per_second, read_calibration(calibration) if calibration else None)
table = plan_table(rows, rates)
table.to_csv(snakemake.output[0], sep="\t", index=False)
over = over_budget(rows, params.budget_bytes, params.setting)
text = table.to_string(index=False)
text += f"\n\ndevice-hours: {table['device_hours'].sum():.4g} in all, one job at a time; rates: {rates.source if rates else 'none'}"
text += f"\nbudget per job: {params.budget}; " + ("over budget:\n  " + "\n  ".join(over) if over else "every job fits") + "\n"
Path(snakemake.log[0]).write_text(text)
print(text)
