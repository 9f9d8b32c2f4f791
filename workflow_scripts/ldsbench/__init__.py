"""Linear Datamodeling Score benchmark for data attribution in diffusion models.

The science lives here as plain functions; the Snakemake rules under
``rules/`` call it through the thin step scripts in ``workflow_scripts/``.
Subpackages by role, each importing only the ones listed before it:

- ``runtime``: files, provenance, seeds, job set-up, device slots, code versions;
- ``data``: image sets, local images, latents, subsets;
- ``spec`` (torch-free): the config, its schema, the registries of method,
  measurement and dataset types, file checks, cache keys, training runs;
- ``diffusion``: the model, its output functions, noise draws, precision,
  sampling, training;
- ``planning``: memory formulas, model footprints (measured on torch's meta
  device), the plan;
- ``measurement``: the per-query measurements (estimators, ELBO, likelihood);
- ``attribution``: what methods share (the scoring base, per-example gradients,
  projection, projected features, curvature, quantized storage);
- ``methods``: one module per method type (the registry is ``spec.method_types``);
- ``evaluation``: LDS, the ceiling, the comparison, tuning, removal effects;
- ``report``: tables and figures.

The rules import only ``spec``, ``planning.plan``, ``runtime.code_versions``
and ``runtime.device_slots``, none of which imports torch, so parsing the
workflow never does (``tests/test_package.py``).
"""
