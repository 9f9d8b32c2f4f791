"""Linear Datamodeling Score benchmark for data attribution in diffusion models.

The package holds the science as plain functions; the Snakemake rules under
``rules/`` call it through the thin step scripts in ``workflow_scripts/``.
Attribution methods live in the ``methods`` subpackage, one module per type
and a registry (README.md, "Package map").
"""
