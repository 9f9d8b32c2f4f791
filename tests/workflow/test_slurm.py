"""The workflow on a real SLURM cluster, through profiles/slurm.

A single-node cluster (this machine; tests/slurm_cluster.py) is started for
the module, with the partitions the profile names. Needs root and
``apt-get install slurm-wlm munge``; skipped otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from slurm_cluster import SlurmCluster, unavailable_reason
from workflow_api import ROOT, SNAKEFILE, SNAKEMAKE, run_workflow, tiny_config, with_changes

PROFILE = ROOT / "profiles" / "slurm"
UNAVAILABLE = unavailable_reason()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no local SLURM cluster: {UNAVAILABLE}"),
]

GPU_RULES = {
    "train_full_model",
    "train_subset_model",
    "generate_queries",
    "measure_model",
    "fit_curvature",
    "project_training_features",
    "score_method",
    "trace_full_training",
    "train_removal_model",
    "train_full_model_seed",
    "measure_removal_model",
    "measure_removal_reference",
    "encode_latents",
    "decode_queries",
    "calibrate",
    "measure_pilot",
}


def read_profile() -> dict:
    """profiles/slurm/config.yaml as Snakemake reads it (YTE variables filled in)."""
    import yte

    with open(PROFILE / "config.yaml") as stream:
        return yte.process_yaml(stream, require_use_yte=True)


def rule_resources(profile: dict, rule: str) -> dict:
    return {**profile["default-resources"], **profile["set-resources"].get(rule, {})}


@pytest.fixture(scope="module")
def cluster():
    profile = read_profile()
    resources = [profile["default-resources"], *profile["set-resources"].values()]
    partitions = [str(r["slurm_partition"]) for r in resources if "slurm_partition" in r]
    memory = max(int(r.get("mem_mb", 0)) for r in resources)
    started = time.monotonic()
    cluster = SlurmCluster(partitions, min_memory_mb=memory)
    try:
        cluster.start()
    except Exception:
        cluster.cleanup()
        raise
    print(f"\nSLURM cluster up in {time.monotonic() - started:.1f} s: {cluster.hardware}, partitions {cluster.partitions}")
    yield cluster
    cluster.cleanup()


def workflow_with_config(folder: Path, config: dict) -> Path:
    """The repository's workflow, through links, with ``config`` as its
    config.yaml; returns its Snakefile.

    Snakemake 9.27 does not pass --replace-workflow-config on to cluster
    jobs: each job merges the workflow's config.yaml under the --configfile
    again, so a job can see methods, measurements or settings that the run
    it belongs to does not have. With the test config as config.yaml, the
    run and its jobs read the same config.
    """
    folder.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in {"config.yaml", "results", "tests"} and not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / SNAKEFILE.name


def slurm_command(config: dict, workdir: Path, *targets: str) -> list[str]:
    """What a user types on a cluster, plus what this test cluster needs."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    snakefile = workflow_with_config(workdir.parent / f"{workdir.name}-workflow", config)
    return [
        str(SNAKEMAKE),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--replace-workflow-config",
        "--executor",
        "slurm",
        "--workflow-profile",
        str(PROFILE),
        # No accounting here, so no sacct: job states come from squeue.
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        # Keep the SLURM log of every job, to check where each one ran.
        "--slurm-keep-successful-logs",
        # These jobs take seconds, not hours: look at their states often.
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        # Prints every sbatch command.
        "--verbose",
        *targets,
    ]


def start(cluster: SlurmCluster, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.env(),
        start_new_session=True,
    )


def finish(process: subprocess.Popen, cluster: SlurmCluster, timeout: float) -> str:
    """Wait for a snakemake run and return its output (its exit status is
    ``process.returncode``); on a timeout kill it and fail with its output."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"snakemake did not finish within {timeout} s\n{explain(output, cluster)}")
    return output


def explain(output: str, cluster: SlurmCluster, workdir: Path | None = None) -> str:
    """The useful part of a run for a failure message: snakemake's errors and
    the end of its output (long lines cut), failed jobs' SLURM logs, and the
    daemon logs."""
    lines = [line if len(line) < 400 else line[:400] + " ..." for line in output.splitlines()]
    errors = [line for line in lines if re.search(r"error|exception|failed|traceback", line, re.IGNORECASE) and "failed_attempts=" not in line]
    parts = ["----- snakemake: lines about errors -----", *errors[-60:], "----- snakemake: end of output -----", *lines[-80:]]
    if workdir is not None:
        for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
            text = log.read_text(errors="replace")
            if re.search(r"error|exception|CANCELLED", text, re.IGNORECASE):
                parts += [f"----- {log} -----", text[-3000:]]
    parts.append(cluster.logs())
    return "\n".join(parts)


def own_output(output: str) -> str:
    """The run's output without the job logs that --show-failed-logs copies
    into it (a failed job's log holds the job's own snakemake output)."""
    kept, skipping, rules = [], False, 0
    for line in output.splitlines():
        if not skipping and re.match(r"^Logfile .*:$", line):
            skipping, rules = True, 0
            continue
        if skipping:
            if line == "=" * 80:
                rules += 1
                skipping = rules < 2
            continue
        kept.append(line)
    return "\n".join(kept)


def sbatch_calls(output: str) -> dict[str, list[tuple[int, str]]]:
    """The (attempt, sbatch options) of every submission in a verbose run, by rule."""
    calls: dict[str, list[tuple[int, str]]] = {}
    for line in output.splitlines():
        if "sbatch call:" not in line:
            continue
        options, wrapped = line.split("--wrap=", 1)
        rule = re.search(r"--comment rule_(\S+)", options).group(1).split("_wildcards_", 1)[0]
        attempt = int(re.search(r"--attempt (\d+)", wrapped).group(1))
        calls.setdefault(rule, []).append((attempt, options))
    return calls


def test_tiny_benchmark_runs_as_slurm_jobs(cluster, tmp_path):
    config = tiny_config()
    # One measurement runs every rule; each further one adds M x K + 2 x
    # methods + 2 jobs of about 10 s each (mostly start-up) to this run.
    first = next(iter(config["measurements"]))
    config["measurements"] = {first: config["measurements"][first]}
    # Every method type's rules run with one method each.
    config["methods"] = {name: method for name, method in config["methods"].items() if name in ("ekfac_influence", "trak", "tracin", "pixels", "random")}
    # One removal seed runs every removal rule (TRAK's second member still
    # needs the seed-1 full-data model).
    config["removal"]["seeds"] = 1
    # One seed per subset: the M trainings still run as one job array, and
    # the ceiling (K >= 2) is statistics, not scheduling.
    config["benchmark"]["seeds"] = 1
    workdir = tmp_path / "slurm"
    started = time.monotonic()
    process = start(cluster, slurm_command(config, workdir))
    output = finish(process, cluster, timeout=1500)
    print(f"\ntiny benchmark through SLURM: {time.monotonic() - started:.0f} s")
    assert process.returncode == 0, explain(output, cluster, workdir)
    jobs = [job for job in cluster.jobs() if job["workdir"] == str(workdir)]

    # The same outputs as a local run (tests/workflow/test_workflow.py).
    results = workdir / "results"
    summary = pd.read_parquet(results / "lds_summary.parquet")
    methods, measurements = list(config["methods"]), list(config["measurements"])
    assert sorted(zip(summary["method"], summary["measurement"])) == sorted((m, s) for m in methods for s in measurements)
    # Percentile intervals need not contain their point estimate; they must be ordered.
    assert (summary["ci_low"] <= summary["ci_high"]).all() and summary[["ci_low", "ci_high"]].stack().between(-1, 1).all()
    assert summary["lds"].between(-1, 1).all()

    # Every job but the target rule `all` ran as a SLURM job. A job that
    # failed was retried (the profile's retries) as a new SLURM job.
    own = own_output(output)
    M, K = config["benchmark"]["subsets"], config["benchmark"]["seeds"]
    local = set(re.findall(r"^localrule (\w+):", own, re.MULTILINE))
    remote = Counter(re.findall(r"^rule (\w+):", own, re.MULTILINE))
    failed = re.findall(r"^Error in rule (\w+):", own, re.MULTILINE)
    if failed:
        print(f"retried after a failure: {failed}")
    assert local <= {"all"}, f"jobs run outside SLURM: {local}"
    assert remote["train_subset_model"] >= M * K and remote["measure_model"] >= M * K
    assert remote["summarize"] >= 1
    assert len(jobs) == sum(remote.values()), jobs
    states = Counter(job["state"] for job in jobs)
    assert states == Counter({"COMPLETED": len(jobs) - len(failed), "FAILED": len(failed)}) - Counter(), jobs
    slurm_logs = workdir / ".snakemake" / "slurm_logs"
    assert len(list((slurm_logs / "rule_train_subset_model").glob("*.log"))) >= M * K
    assert list((slurm_logs / "rule_summarize").glob("*.log"))

    # What the profile asks for reached sbatch: partitions, time limits
    # growing with the attempt, requeueing, and a job array for the M x K
    # trainings.
    profile = read_profile()
    cpu_partition = profile["default-resources"]["slurm_partition"]
    gpu_partitions = {profile["set-resources"][rule]["slurm_partition"] for rule in GPU_RULES}
    assert len(gpu_partitions) == 1 and cpu_partition not in gpu_partitions
    calls = sbatch_calls(own)
    assert set(calls) == set(remote)
    for rule, submissions in calls.items():
        wanted = rule_resources(profile, rule)
        partition = wanted["slurm_partition"]
        assert partition in (gpu_partitions if rule in GPU_RULES else {cpu_partition}), rule
        for attempt, options in submissions:
            minutes = eval(str(wanted["runtime"]), {"attempt": attempt})
            assert f" -p {partition} " in options, options
            assert f" -t {minutes} " in options and " --requeue " in options, options
        assert {job["partition"] for job in jobs if job["comment"].startswith(f"rule_{rule}")} == {partition}
    first_attempts = [options for attempt, options in calls["train_subset_model"] if attempt == 1]
    assert len(first_attempts) == 1 and f"--array=1-{M * K}" in first_attempts[0]
    # Device cpu: the GPU rules ask for no GPU.
    assert not any("--gpus" in options for submissions in calls.values() for _, options in submissions)


def test_requeued_training_resumes_to_identical_weights(cluster, tmp_path):
    """`scontrol requeue` (what preemption does) kills a training mid-run;
    SLURM restarts the job, which resumes from its checkpoint and ends with
    the same weights, bit for bit, as a local run that was never interrupted."""
    steps, every = 600, 50
    config = with_changes(tiny_config(), {"training.subset_steps": steps, "training.checkpoint_every": every})
    target = "results/models/subset_0/seed_0"
    workdir = tmp_path / "slurm"
    checkpoint = workdir / "results" / "resume" / "subset_0" / "seed_0" / "checkpoint.pt"
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=1) as pool:
        reference = pool.submit(run_workflow, config, tmp_path / "local", target)
        process = start(cluster, slurm_command(config, workdir, target))
        try:
            job_id = _wait_for(
                lambda: next(
                    (
                        job["id"]
                        for job in cluster.jobs()
                        if job["workdir"] == str(workdir) and job["comment"] == "rule_train_subset_model_wildcards_0_0" and job["state"] == "RUNNING"
                    ),
                    None,
                ),
                process,
                cluster,
                "the training job to run",
            )
            _wait_for(checkpoint.exists, process, cluster, f"{checkpoint}")
            step_at_requeue = torch.load(checkpoint, map_location="cpu", weights_only=False)["step"]
            assert not (workdir / target).exists(), "the training finished before it could be requeued"
            cluster.run("scontrol", "requeue", job_id)
            requeued_at = time.monotonic()
            _wait_for(lambda: cluster.job_info(job_id).get("JobState") == "PENDING", process, cluster, "the requeued job to pend")
            # SLURM holds a requeued job back for about two minutes (its
            # BeginTime), time for the node to clean up after it. Start it
            # again as soon as the node is clean (idle: no other job runs now).
            _wait_for(lambda: cluster.node_states() == ["idle"], process, cluster, "the node to be idle")
            cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        except BaseException:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            raise
        output = finish(process, cluster, timeout=900)
        local = reference.result()
    print(
        f"\nrequeue test: {time.monotonic() - started:.0f} s; requeued at checkpoint step {step_at_requeue}, "
        f"{time.monotonic() - requeued_at:.0f} s from requeue to the end"
    )

    assert process.returncode == 0, explain(output, cluster, workdir)
    assert local.returncode == 0, local.stderr[-5000:]

    # SLURM restarted the job once, and its log holds both attempts.
    info = cluster.job_info(job_id)
    assert info["Restarts"] == "1" and info["JobState"] == "COMPLETED", f"{info}\n{explain(output, cluster, workdir)}"
    slurm_log = next((workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")).read_text(errors="replace")
    attempts = [m.start() for m in re.finditer(r"^rule train_subset_model:", slurm_log, re.MULTILINE)]
    assert len(attempts) == 2, slurm_log[-3000:]
    assert attempts[0] < slurm_log.find("DUE TO JOB REQUEUE") < attempts[1], slurm_log[-3000:]

    # The restarted training resumed from a checkpoint written before the
    # requeue, instead of starting over: its log (rewritten by the restarted
    # job) has no step before that checkpoint.
    training_log = (workdir / "results" / "logs" / "train" / "subset_0_seed_0.log").read_text()
    resumed = re.search(r"resuming from the checkpoint at step (\d+)", training_log)
    assert resumed, training_log
    resumed_step = int(resumed.group(1))
    assert step_at_requeue <= resumed_step < steps, training_log
    logged_steps = [int(s) for s in re.findall(rf"step (\d+)/{steps}", training_log)]
    assert logged_steps and min(logged_steps) > resumed_step and max(logged_steps) == steps, training_log

    weights = Path(target) / "unet" / "diffusion_pytorch_model.safetensors"
    assert (workdir / weights).read_bytes() == (tmp_path / "local" / weights).read_bytes()


def _wait_for(condition, process, cluster, what, timeout=300, poll=0.2):
    """Poll ``condition`` until it returns something true, while ``process``
    (the snakemake run) lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            output, _ = process.communicate()
            pytest.fail(f"snakemake ended while waiting for {what}\n{explain(output, cluster)}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{cluster.logs()}")
