"""`snakemake plan`: write and print the plan table (``ldsbench.planning.plan``)."""

from pathlib import Path

from ldsbench.planning.plan import JobEstimate, over_budget, plan_table

params = snakemake.params
rows = [JobEstimate(**row) for row in params.rows]
table = plan_table(rows, params.draws_per_second)
table.to_csv(snakemake.output[0], sep="\t", index=False)
over = over_budget(rows, params.budget_bytes, params.setting)
text = table.to_string(index=False)
text += f"\n\nbudget per job: {params.budget}; " + ("over budget:\n  " + "\n  ".join(over) if over else "every job fits") + "\n"
Path(snakemake.log[0]).write_text(text)
print(text)
