"""Code is versioned by content: a checkout that touches files without
changing them reruns nothing, an edit of a cheap stage's step script reruns
that stage and what reads it, and an edit of a training script retrains
nothing (``code_version`` in rules/common.smk; docs/caching-and-rescoring.md)."""

import os
import time

import pytest

from workflow_api import copy_workflow, dry_run

pytestmark = pytest.mark.slow


def _touch_everything(root):
    later = time.time() + 60
    for folder in ("workflow_scripts", "rules", "schemas"):
        for path in (root / folder).rglob("*"):
            if path.is_file():
                os.utime(path, (later, later))
    os.utime(root / "Snakefile", (later, later))


def test_a_checkout_that_touches_every_file_reruns_nothing(tiny_run, tmp_path):
    config, workdir = tiny_run
    root = copy_workflow(tmp_path / "workflow")
    _touch_everything(root)
    assert dry_run(config, workdir, snakefile=root / "Snakefile") == []


def test_editing_a_training_script_retrains_nothing(tiny_run, tmp_path):
    config, workdir = tiny_run
    root = copy_workflow(tmp_path / "workflow")
    for script in ("train_model.py", "measure_model.py", "sample_subsets.py", "prepare_data.py"):
        path = root / "workflow_scripts" / script
        path.write_text(path.read_text() + "\n# An edit.\n")
    assert dry_run(config, workdir, snakefile=root / "Snakefile") == []
    # The training module also decides TracIn's replay: that rescores, and trains nothing.
    path = root / "workflow_scripts" / "ldsbench" / "diffusion" / "training.py"
    path.write_text(path.read_text() + "\n# An edit.\n")
    files = dry_run(config, workdir, snakefile=root / "Snakefile")
    assert {f.split("/")[2] for f in files if f.startswith("results/scores/")} == {"tracin", "retrac"}
    expensive = ("results/models/", "results/measurements/", "results/removal/", "results/data/", "results/queries/", "results/subsets")
    assert not [f for f in files if f.startswith(expensive)]


def test_editing_a_cheap_step_script_reruns_that_stage_and_what_reads_it(tiny_run, tmp_path):
    config, workdir = tiny_run
    root = copy_workflow(tmp_path / "workflow")
    path = root / "workflow_scripts" / "compute_lds.py"
    path.write_text(path.read_text() + "\n# An edit.\n")
    files = dry_run(config, workdir, snakefile=root / "Snakefile")
    assert {f.split("/")[2] for f in files if f.startswith("results/lds/")} == set(config["methods"])
    assert "results/lds_summary.parquet" in files
    assert not [f for f in files if f.startswith(("results/scores/", "results/models/", "results/measurements/", "results/curvature/", "results/features/"))]
