"""Tests for ldsbench.runtime.jobs: a step's thread count reaches torch
whether its script imported torch before ``start_job`` or later, and a step
that never uses torch does not import it.

Each case runs in a fresh interpreter, since whether torch is imported is
the point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "workflow_scripts"

# A step script's start: ``start_job`` with a job of 3 threads, then (if
# asked) ``select_device``; reports torch's thread count at each point.
STEP = """
import json, sys
from types import SimpleNamespace

import_first, log, report = json.loads(sys.argv[1])
if import_first:
    import torch
from ldsbench.runtime.jobs import select_device, start_job

job = SimpleNamespace(log=[log], threads=3, rule="step", wildcards={}, resources={}, config={})
start_job(job)
seen = {"after_start": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None}
select_device("cpu")
seen["after_device"] = sys.modules["torch"].get_num_threads()
with open(report, "w") as f:
    json.dump(seen, f)
"""


def run_step(tmp_path, import_first: bool) -> dict:
    report = tmp_path / "report.json"
    args = json.dumps([import_first, str(tmp_path / "step.log"), str(report)])
    # One thread by default, so that 3 can only come from the job.
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", STEP, args], env=env, check=True, timeout=120)
    return json.loads(report.read_text())


@pytest.mark.parametrize("import_first", [True, False], ids=["torch-imported-first", "torch-imported-later"])
def test_the_jobs_threads_reach_torch(tmp_path, import_first):
    seen = run_step(tmp_path, import_first)
    # A script that never imports torch (the statistics and report steps)
    # leaves it unimported: start_job does not pull it in.
    assert seen["after_start"] == (3 if import_first else None)
    assert seen["after_device"] == 3
