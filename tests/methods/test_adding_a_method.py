"""A method is one module and one registry entry: a toy method added to a
copy of the workflow with only its module, its registry entry and its schema
block is validated, scored and scheduled; editing one method's module
reschedules only that method."""

import subprocess
import sys
import textwrap

import pytest
import yaml

from workflow_api import SNAKEMAKE, copy_workflow, dry_run, tiny_config

TOY_MODULE = '''\
"""A toy method: minus the squared pixel distance, for every measurement."""

from __future__ import annotations

from ldsbench.spec.measurement_types import same_for_every_measurement


def score_toy(job):
    queries, train = job.queries.flatten(1).double(), job.train.flatten(1).double()
    distances = queries.square().sum(1)[:, None] - 2 * queries @ train.T + train.square().sum(1)[None]
    return [float("nan")], same_for_every_measurement(job, -distances[None].float().numpy())
'''
TOY_ENTRY = '\nMETHOD_TYPES["toy"] = MethodType("toy", "score_toy")\n'
TOY_SCHEMA = """\
  toy_method:
    type: object
    additionalProperties: false
    required: [type]
    properties:
      type: {const: toy}
"""


def _add_toy_method(root):
    package = root / "workflow_scripts" / "ldsbench"
    (package / "methods" / "toy.py").write_text(TOY_MODULE)
    with open(package / "spec" / "method_types.py", "a") as registry:
        registry.write(TOY_ENTRY)
    schema = root / "schemas" / "config.schema.yaml"
    text = schema.read_text()
    schema.write_text(text.replace("  random_method:\n", TOY_SCHEMA + "  random_method:\n", 1))
    return {"workflow_scripts/ldsbench/methods/toy.py", "workflow_scripts/ldsbench/spec/method_types.py", "schemas/config.schema.yaml"}


def test_a_toy_method_needs_only_its_module_registry_entry_and_schema_block(tmp_path):
    root = copy_workflow(tmp_path / "workflow")
    changed = _add_toy_method(root)
    assert len(changed) == 3
    config = tiny_config()
    config["methods"] = {"toy": {"type": "toy"}, "random": {"type": "random"}}
    config["removal"]["methods"] = ["toy"]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    # Validated and scored through the registry, in the copy's package.
    check = textwrap.dedent(f"""
        import sys, torch, yaml
        sys.path.insert(0, {str(root / "workflow_scripts")!r})
        from ldsbench.spec.config import validate_config
        from ldsbench.spec.method_types import ScoringJob, scorer, scorer_modules
        config = validate_config(yaml.safe_load(open({str(config_path)!r})))
        job = ScoringJob(None, None, torch.rand(5, 1, 8, 8), torch.rand(3, 1, 8, 8), config["methods"]["toy"], {{"loss": {{"type": "loss"}}}})
        values, scores = scorer("toy")(job)
        assert scores["loss"].shape == (1, 3, 5) and (scores["loss"] <= 1e-4).all()
        print(scorer_modules("toy"))
    """)
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "['methods/toy.py', 'spec/measurement_types.py']"

    # Scheduled like any other method: its scoring and LDS jobs, in the summary.
    command = [
        str(SNAKEMAKE),
        "-n",
        "--snakefile",
        str(root / "Snakefile"),
        "--directory",
        str(tmp_path / "run"),
        "--cores",
        "1",
        "--configfile",
        str(config_path),
        "--replace-workflow-config",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    assert "results/scores/toy/loss.npy" in plan and "results/lds/toy/elbo.parquet" in plan


@pytest.mark.slow
def test_editing_one_method_module_rescores_only_that_method(tiny_run, tmp_path):
    config, workdir = tiny_run
    root = copy_workflow(tmp_path / "workflow")
    das = root / "workflow_scripts" / "ldsbench" / "methods" / "das.py"
    das.write_text(das.read_text() + "\n# An edit.\n")
    files = dry_run(config, workdir, snakefile=root / "Snakefile")
    methods = {path.split("/")[2] for path in files if path.startswith(("results/scores/", "results/lds/"))}
    assert methods == {"das"}, f"an edit of das.py rescheduled {sorted(methods)}"
    assert not [path for path in files if "models/" in path or "measurements/" in path or "curvature/" in path]
