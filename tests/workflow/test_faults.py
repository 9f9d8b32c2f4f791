"""Faults a long benchmark meets, each through the command line a user types:
a training killed mid-run, a diverging training, corrupted and mismatched
files, bad config, and a config change that would retrain finished models."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from files import flip_byte
from workflow_api import copy_run, run_workflow, start_workflow, tiny_config, with_changes

TARGET = "results/models/subset_0/seed_0"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def _log(workdir, name):
    return (Path(workdir) / "results" / "logs" / name).read_text()


def _assert_run_fails(config, workdir, log_name, message, *extra):
    """The run fails, and the log of the step that refused says why."""
    result = run_workflow(config, workdir, *extra)
    assert result.returncode != 0
    assert message in _log(workdir, log_name)


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_bitwise_identical_weights(tmp_path):
    config = with_changes(tiny_config(), {"training.subset_steps": 200, "training.checkpoint_every": 20})
    reference = run_workflow(config, tmp_path / "reference", TARGET)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = tmp_path / "killed"
    checkpoint = killed / "results" / "resume" / "subset_0" / "seed_0" / "checkpoint.pt"
    _kill_when(start_workflow(config, killed, TARGET), checkpoint.exists, "the first training checkpoint")
    assert not (killed / TARGET).exists(), "the training was killed before it finished"

    # What a user does after a crash: unlock the directory, rerun the incomplete job.
    assert run_workflow(config, killed, "--unlock").returncode == 0
    resumed = run_workflow(config, killed, TARGET, "--rerun-incomplete")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the checkpoint at step" in _log(killed, "train/subset_0_seed_0.log")
    assert (killed / TARGET / WEIGHTS).read_bytes() == (tmp_path / "reference" / TARGET / WEIGHTS).read_bytes()
    assert not checkpoint.exists(), "resume state is removed once the model is saved"


def _kill_when(process, condition, what):
    try:
        _wait_for(condition, 900, what)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# A method of each kind of input (curvature, projected features, none) and
# the removal branch's: the killed run retrains and remeasures everything, so
# each further method would only add its scoring.
KILLED_RUN_METHODS = ("ekfac_influence", "trak", "pixels")


def _combines_methods(relative: Path) -> bool:
    """Tables over every method of a run (paired differences, Holm's
    adjustment, the summary): a run of fewer methods writes others."""
    return relative.parts[1] == "comparison" or (len(relative.parts) == 2 and relative.name.startswith("lds_"))


@pytest.mark.slow
def test_benchmark_killed_twice_ends_with_the_results_of_an_uninterrupted_run(tiny_run, tmp_path):
    tiny, reference = tiny_run
    config = {**tiny, "methods": {name: tiny["methods"][name] for name in KILLED_RUN_METHODS}}
    results = tmp_path / "results"
    _kill_when(start_workflow(config, tmp_path), lambda: any(results.glob("measurements/loss/*.parquet")), "the first measurement")
    assert run_workflow(config, tmp_path, "--unlock").returncode == 0
    _kill_when(start_workflow(config, tmp_path, "--rerun-incomplete"), lambda: any(results.glob("scores/*/loss.npy")), "the first scores")
    assert run_workflow(config, tmp_path, "--unlock").returncode == 0
    finished = run_workflow(config, tmp_path, "--rerun-incomplete")
    assert finished.returncode == 0, finished.stderr[-3000:]

    written = sorted(p.relative_to(tmp_path) for p in results.rglob("*") if p.suffix in {".parquet", ".npy"})
    compared = [relative for relative in written if not _combines_methods(relative)]
    for method in KILLED_RUN_METHODS:
        assert Path("results", "scores", method, "loss.npy") in compared and Path("results", "lds", method, "loss.parquet") in compared
    assert any(relative.parts[1] == "measurements" for relative in compared) and Path("results", "removal_changes.parquet") in compared
    for relative in compared:
        assert (tmp_path / relative).read_bytes() == (reference / relative).read_bytes(), relative


@pytest.mark.slow
def test_diverging_training_names_the_model_and_writes_none(tmp_path):
    config = with_changes(tiny_config(), {"training.learning_rate": 1e30})
    _assert_run_fails(config, tmp_path, "train/subset_0_seed_0.log", "training diverged for subset 0 seed 0", TARGET)
    assert not (tmp_path / TARGET).exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"training.lerning_rate": 0.1}, "'lerning_rate' was unexpected"),
        ({"methods.trak.type": "trek"}, "methods.trak.type: 'trek' is not one of"),
        ({"dataset.name": "cifar2", "dataset.path": "/nonexistent/cifar-10-python.tar.gz"}, "dataset.path"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, changes, message):
    result = run_workflow(with_changes(tiny_config(), changes), tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "results").exists(), "nothing may run on a bad config"


def test_rescore_needs_a_finished_benchmark(tmp_path):
    result = run_workflow(tiny_config(), tmp_path, "rescore")
    assert result.returncode != 0
    assert "do not exist yet; run `snakemake` first" in result.stderr


@pytest.fixture
def finished(tiny_run, tmp_path):
    """A private copy of the finished tiny run, free to damage."""
    config, workdir = tiny_run
    return config, copy_run(workdir, tmp_path / "run")


@pytest.mark.slow
def test_corrupted_score_file_is_detected(finished):
    config, workdir = finished
    flip_byte(workdir / "results" / "scores" / "random" / "loss.npy")
    _assert_run_fails(config, workdir, "lds/random.log", "loss.npy does not match the checksum")


@pytest.mark.slow
def test_scores_of_another_query_set_are_refused(finished):
    config, workdir = finished
    manifest_path = workdir / "results" / "scores" / "random" / "loss.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["provenance"]["queries_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    _assert_run_fails(config, workdir, "lds/random.log", "do not belong together (queries_sha256: ")


@pytest.mark.slow
def test_measurement_of_the_wrong_model_is_refused(finished):
    config, workdir = finished
    measurements = workdir / "results" / "measurements" / "loss"
    first, second = measurements / "subset_0_seed_0.parquet", measurements / "subset_1_seed_0.parquet"
    first_bytes = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(first_bytes)
    _assert_run_fails(config, workdir, "ground_truth/loss.log", "holds the measurements of another model")


@pytest.mark.slow
def test_corrupted_model_weights_are_detected(finished):
    config, workdir = finished
    flip_byte(workdir / TARGET / WEIGHTS, offset=(workdir / TARGET / WEIGHTS).stat().st_size // 2)
    result = run_workflow(config, workdir, "--forcerun", "measure_model")
    assert result.returncode != 0
    assert "the file is corrupted" in _log(workdir, "measure/subset_0_seed_0.log")


@pytest.mark.slow
def test_training_change_stops_before_deleting_models_and_rescore_uses_them(finished):
    config, workdir = finished
    models = sorted((workdir / "results" / "models").glob("subset_*/seed_*/manifest.json"))
    before = {path: path.stat().st_mtime_ns for path in models}
    changed = with_changes(config, {"training.subset_steps": 61, "methods.trak.lambda": 0.001})

    refused = run_workflow(changed, workdir)
    assert refused.returncode != 0
    assert f"retrain {len(models)} finished model(s)" in refused.stderr
    assert "training.subset_steps: 60 -> 61" in refused.stderr
    assert {path: path.stat().st_mtime_ns for path in models} == before, "no model may be touched"

    plan = run_workflow(changed, workdir, "rescore", "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = plan.stdout + plan.stderr
    assert "score_method" in jobs and "train_subset_model" not in jobs and "measure_model" not in jobs

    rescored = run_workflow(changed, workdir, "rescore")
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert "values [0.001, 0.01]" in _log(workdir, "scores/trak.log"), "trak was rescored with its new lambda"
    assert {path: path.stat().st_mtime_ns for path in models} == before
