"""Linear Datamodeling Score benchmark for data attribution in diffusion models.

The package holds the science as plain functions; the Snakemake rules under
``rules/`` call it through the thin scripts in ``workflow_scripts/steps``.
"""
