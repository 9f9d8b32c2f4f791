"""Methods from outside the package in the workflow, on a copy of the tiny
benchmark's run: a score file of another method's scores gets that method's
LDS exactly, and editing an external method's own module rescores that
method alone."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from ldsbench.runtime.fingerprints import folder_fingerprint
from workflow_api import ROOT, copy_run, dry_run, run_workflow

pytestmark = pytest.mark.slow


def test_score_files_and_external_methods_in_a_rescore(tiny_run, tmp_path):
    config, workdir = tiny_run
    workdir = copy_run(workdir, tmp_path / "run")
    results = workdir / config["results"]
    # TRAK's default scores as another library would write them: [N, Q], as
    # the inner product it reports, naming the benchmark.
    benchmark = folder_fingerprint(results)
    files = {}
    for measurement in config["measurements"]:
        files[measurement] = str(tmp_path / f"trak_{measurement}.npz")
        np.savez(files[measurement], scores=-np.load(results / "scores" / "trak" / f"{measurement}.npy").T, benchmark=np.array(benchmark))
    # The external method from a folder of this test's own.
    methods = shutil.copytree(ROOT / "tests" / "external_methods", tmp_path / "methods")
    config = {
        **config,
        "methods": {
            **config["methods"],
            "kernel": {**config["methods"]["kernel"], "path": str(methods / "gradient_kernel.py")},
            "trak_from_file": {"type": "scores_file", "path": files, "layout": "train_by_query", "sign": "influence_as_reported"},
        },
    }
    result = run_workflow(config, workdir, "rescore")
    assert result.returncode == 0, result.stderr[-5000:]

    for measurement in config["measurements"]:
        reference = pd.read_parquet(results / "lds" / "trak" / f"{measurement}.parquet")
        from_file = pd.read_parquet(results / "lds" / "trak_from_file" / f"{measurement}.parquet")
        np.testing.assert_array_equal(from_file["lds"].to_numpy(), reference["lds"].to_numpy())
    summary = pd.read_parquet(results / "lds_summary.parquet")
    rows = summary.set_index(["method", "measurement"])
    assert {"kernel", "trak_from_file"} <= set(summary["method"])
    # The untuned default over all subsets: the same point estimate as TRAK's.
    np.testing.assert_array_equal(rows.loc["trak_from_file", "all_subsets_lds"].to_numpy(), rows.loc["trak", "all_subsets_lds"].to_numpy())
    # Its grid was tuned like a built-in method's.
    assert rows.loc["kernel", "tuned_values"].str.len().gt(0).all()

    # Editing a module the external method imports rescores that method alone.
    assert not [f for f in dry_run(config, workdir, targets=("rescore",)) if "/scores/" in f]
    (methods / "projected.py").write_text((methods / "projected.py").read_text() + "\n# edited\n")
    rescored = {f.split("/")[2] for f in dry_run(config, workdir, targets=("rescore",)) if "/scores/" in f}
    assert rescored == {"kernel"}
