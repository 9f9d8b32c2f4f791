"""Linear Datamodeling Score benchmark for data attribution in diffusion models.

The science lives here as plain functions; the Snakemake rules under
``rules/`` call it through the thin step scripts in ``workflow_scripts/``.
Subpackages by role, each importing only the ones listed before it:

- ``runtime``: files, provenance, seeds, job set-up, device slots, code versions;
- ``data``: image sets, local images, latents, subsets;
- ``spec`` (torch-free): the config, its schema, the registries of method,
  measurement and dataset types, file checks, cache keys, training runs,
  benchmark bundles;
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

``ldsbench.evaluate`` (``report.api``, docs/python-api.md) evaluates scores
computed anywhere against a results folder or a benchmark bundle; it is
imported on first use, so that ``import ldsbench`` stays light.
"""

__all__ = ["evaluate"]


def __getattr__(name):
    if name == "evaluate":
        from ldsbench.report.api import evaluate

        return evaluate
    raise AttributeError(f"module 'ldsbench' has no attribute {name!r}")
