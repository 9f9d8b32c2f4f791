"""The CIFAR-2 preset with only its counts reduced, end to end on the CPU:
the paper's 38M-parameter UNet (3 channels, attention, dropout, flips) on a
CIFAR-10 archive of random images in the real format. It checks that every
rule runs at the model size users run, and that `snakemake plan`'s memory
estimates hold against the jobs' peak resident sizes (the kernel's high-water
mark of each job's process: Snakemake's benchmark files sample it, and miss
the peak of a job that runs past their first 30 samples)."""

import pandas as pd
import pytest

from cifar_archive import write_cifar10_archive
from job_peaks import job_peaks, record_job_peaks
from workflow_api import ROOT, load_yaml, run_workflow, with_changes

DRAWS = {"train_draws": 2, "query_draws": 2}
REHEARSAL = {
    "dataset.n_train": 8,
    "dataset.n_heldout": 2,
    "training.steps": 4,
    "training.subset_steps": 2,
    "training.batch_size": 4,
    "training.checkpoint_every": 2,
    "benchmark.subsets": 4,  # the fewest that split into tuning and test subsets
    # One seed: every rule still runs, at the model's size, and each
    # (subset, seed) job adds about half a minute of start-up, loading and
    # saving. The ceiling (K >= 2) is statistics over the same arrays.
    "benchmark.seeds": 1,
    "queries": {"generated": 2, "heldout": 2, "sampling_steps": 4, "seed": 0},
    "measurements.loss": {"type": "loss", "draws": 4, "strata": 2, "seed": 0},
    "measurements.elbo": {"type": "elbo", "draws": 4, "strata": 2, "seed": 0},
    # Two threads per job (so one job at a time on 2 cores): the curvature
    # fit's eigendecompositions dominate and use both.
    "runtime": {"threads_per_job": 2, "device": "cpu", "memory_gb": 10},
    # The intervals of 4 subsets and 4 queries say nothing; each comparison
    # job costs about 0.025 s per resample on one core.
    "statistics": {"resamples": 100},
}


def rehearsal_config(tmp_path) -> dict:
    archive = write_cifar10_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=20)
    config = with_changes(load_yaml(ROOT / "configs" / "cifar2.yaml"), {**REHEARSAL, "dataset.path": str(archive), "results": "results"})
    # K-FAC shares EK-FAC's fit and runs the same scoring job with other
    # eigenvalues (two minutes of float64 rotations here); the tiny
    # benchmark runs both.
    del config["methods"]["kfac_influence"]
    for method in config["methods"].values():
        if method["type"] == "influence":
            method.update(DRAWS)
            method["curvature"]["draws_per_example"] = 2
        elif method["type"] == "trak":
            # The preset's k = 4096; a dense projection at P = 38M takes
            # minutes per gradient on a CPU, the sparse one seconds.
            method.update(DRAWS, projection="sparse")
    return config


def _peaks(records, rule, **wildcards):
    """Peak resident sizes (GiB) of the jobs of ``rule`` with ``wildcards``."""
    peaks = [r["peak_bytes"] / 2**30 for r in records if r["rule"] == rule and wildcards.items() <= r["wildcards"].items()]
    assert peaks, (rule, wildcards)
    return peaks


@pytest.mark.slow
def test_cifar2_preset_with_reduced_counts_runs_end_to_end(tmp_path):
    config = rehearsal_config(tmp_path)
    env = record_job_peaks(tmp_path / "peaks")
    result = run_workflow(config, tmp_path, "all", "plan", "--resources", "mem_mb=20000", timeout=2400, env=env)
    assert result.returncode == 0, result.stderr[-5000:]
    results = tmp_path / "results"
    summary = pd.read_parquet(results / "lds_summary.parquet")
    assert set(summary["method"]) == set(config["methods"])
    assert summary["n_subsets"].eq(4).all() and summary["n_queries"].eq(4).all()

    # The plan's estimates against the measured peak resident size (GiB).
    plan = pd.read_csv(results / "plan.tsv", sep="\t").set_index("rule")["peak_memory_gb"]
    records = job_peaks(tmp_path / "peaks")
    checks = {
        "train_subset_model": _peaks(records, "train_subset_model"),
        "measure_model": _peaks(records, "measure_model"),
        "score_method[ekfac_influence]": _peaks(records, "score_method", method="ekfac_influence"),
        "score_method[trak]": _peaks(records, "score_method", method="trak"),
    }
    curvature = [rule for rule in plan.index if rule.startswith("fit_curvature[")]
    measured_curvature = _peaks(records, "fit_curvature")
    assert len(curvature) == len(measured_curvature) == 1
    for rule, measured in zip(sorted(curvature), measured_curvature):
        checks[rule] = [measured]
    features = [rule for rule in plan.index if rule.startswith("project_training_features[")]
    assert features, "TRAK reads its training features from a feature job"
    for rule in features:
        checks[rule] = _peaks(records, "project_training_features", features=rule.split("[")[1].rstrip("]"))
    report = {rule: (plan[rule], max(peaks)) for rule, peaks in checks.items()}
    print("estimated vs measured peak GiB:", report)
    for rule, (estimate, measured) in report.items():
        assert measured / 2 <= estimate <= 2 * measured, f"{rule}: estimated {estimate:.2f} GiB, measured {measured:.2f} GiB"
