"""The plan before launch: peak memory of every stage as formulas, the
model's measured sizes, and the per-rule table of ``snakemake plan``."""
