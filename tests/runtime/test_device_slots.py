"""Tests for ldsbench.runtime.device_slots: one device per GPU job, over simulated devices.

Slots are exercised by real, separate job processes, since a flock belongs
to an open file and dies with its process; no GPU is needed.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ldsbench.runtime import device_slots
from ldsbench.runtime.device_slots import acquire_slot, claim_device_for_job, discover_devices, slot_directory

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "workflow_scripts"

# A job process: take a slot, report it, hold it until told to stop (or
# forever), report when it let go.
JOB = """
import json, logging, sys, time
from pathlib import Path
from ldsbench.runtime.device_slots import acquire_slot

devices, jobs_per_gpu, slot_dir, report, stop = json.loads(sys.argv[1])
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
slot = acquire_slot(devices, jobs_per_gpu, slot_dir, poll_seconds=0.02, log=logging.getLogger("job"))
taken = time.time()
Path(report + ".taken").write_text(json.dumps({"device": slot.device, "slot": slot.slot, "path": str(slot.path)}))
while stop is None or not Path(stop).exists():
    time.sleep(0.01)
Path(report).write_text(json.dumps({"device": slot.device, "slot": slot.slot, "taken": taken, "released": time.time()}))
slot.release()
"""


def start_job_process(tmp_path, name, devices, jobs_per_gpu, stop):
    report = tmp_path / name
    stderr = open(tmp_path / f"{name}.stderr", "w")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    args = json.dumps([devices, jobs_per_gpu, str(tmp_path / "slots"), str(report), stop and str(stop)])
    process = subprocess.Popen([sys.executable, "-c", JOB, args], stderr=stderr, env=env)
    return process, report


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def is_locked(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_concurrent_jobs_never_share_a_slot_and_extra_jobs_wait(tmp_path):
    devices, jobs_per_gpu, n_jobs = ["0", "1"], 2, 6
    stop = tmp_path / "stop"
    jobs = [start_job_process(tmp_path, f"job{i}", devices, jobs_per_gpu, stop) for i in range(n_jobs)]
    taken = lambda: [r for _, r in jobs if Path(f"{r}.taken").exists()]  # noqa: E731
    waiting = lambda: [r for _, r in jobs if "waiting" in Path(f"{r}.stderr").read_text()]  # noqa: E731

    # Four slots: four jobs get one at once, spread two per device; two wait.
    wait_for(lambda: len(taken()) == 4 and len(waiting()) == 2)
    first = [json.loads(Path(f"{r}.taken").read_text()) for r in taken()]
    assert sorted((s["device"], s["slot"]) for s in first) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    assert set(taken()).isdisjoint(waiting())

    stop.touch()
    for process, _ in jobs:
        assert process.wait(timeout=10) == 0
    reports = [json.loads(Path(r).read_text()) for _, r in jobs]
    assert all((r["device"], r["slot"]) in {(d, j) for d in devices for j in range(jobs_per_gpu)} for r in reports)
    for device in devices:
        for slot in range(jobs_per_gpu):
            holders = sorted((r["taken"], r["released"]) for r in reports if (r["device"], r["slot"]) == (device, slot))
            assert all(later[0] >= earlier[1] for earlier, later in zip(holders, holders[1:])), (device, slot)
    # The waiting jobs said so once, and only they did.
    for _, report in jobs:
        expected = 1 if report in waiting() else 0
        assert Path(f"{report}.stderr").read_text().count("waiting") == expected


def test_killed_job_frees_its_slot(tmp_path):
    process, report = start_job_process(tmp_path, "job", ["0"], 1, stop=None)
    wait_for(lambda: Path(f"{report}.taken").exists())
    lock_file = json.loads(Path(f"{report}.taken").read_text())["path"]
    assert is_locked(lock_file)

    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert not is_locked(lock_file)
    slot = acquire_slot(["0"], 1, tmp_path / "slots", poll_seconds=0.01)
    assert (slot.device, slot.slot, str(slot.path)) == ("0", 0, lock_file)
    slot.release()


def test_slots_fill_the_least_busy_device_first(tmp_path):
    take = lambda: acquire_slot(["0", "1"], 2, tmp_path, poll_seconds=0.01)  # noqa: E731
    a, b, c = take(), take(), take()
    assert [(s.device, s.slot) for s in (a, b, c)] == [("0", 0), ("1", 0), ("0", 1)]
    b.release()
    d = take()
    assert (d.device, d.slot) == ("1", 0)
    a.release()
    e = take()
    assert (e.device, e.slot) == ("0", 0)
    for slot in (c, d, e):
        slot.release()


def runtime(tmp_path, jobs_per_gpu=1):
    return {"jobs_per_gpu": jobs_per_gpu, "gpu_slot_dir": str(tmp_path)}


def test_user_restriction_is_honoured_and_narrowed(tmp_path):
    environ = {"CUDA_VISIBLE_DEVICES": "3,5"}
    busy = acquire_slot(["3"], 1, slot_directory(tmp_path))  # another job holds GPU 3
    assert claim_device_for_job(1, runtime(tmp_path), environ) == "5"
    assert environ == {"CUDA_VISIBLE_DEVICES": "5"}
    busy.release()


def test_uuids_are_honoured(tmp_path):
    gpu = "GPU-8f6e1c2a-0b7d-4e5f-9a1b-2c3d4e5f6a7b"
    mig = "MIG-GPU-8f6e1c2a-0b7d-4e5f-9a1b-2c3d4e5f6a7b/1/0"
    environ = {"CUDA_VISIBLE_DEVICES": f"{mig},{gpu}"}
    assert claim_device_for_job(1, runtime(tmp_path), environ) == mig
    assert environ["CUDA_VISIBLE_DEVICES"] == mig
    lock_files = sorted(p.name for p in slot_directory(tmp_path).glob("gpu-*"))
    assert lock_files == [f"gpu-{gpu}.slot-0.lock", f"gpu-{mig.replace('/', '_')}.slot-0.lock"]


def test_devices_from_nvidia_smi_without_initialising_cuda(tmp_path):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    environ = {"PATH": str(fake.parent)}
    assert discover_devices(environ) == ["0", "1"]
    assert claim_device_for_job(1, runtime(tmp_path), environ) == "0"
    assert environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # nvidia-smi's numbering


@pytest.mark.parametrize("visible", ["", "-1", "-1,0"])
def test_hidden_devices_mean_cpu(tmp_path, visible):
    environ = {"CUDA_VISIBLE_DEVICES": visible}
    assert claim_device_for_job(1, runtime(tmp_path), environ) is None
    assert environ == {"CUDA_VISIBLE_DEVICES": visible}


def test_no_nvidia_smi_means_no_devices(tmp_path):
    environ = {"PATH": str(tmp_path)}
    assert discover_devices(environ) == []
    assert claim_device_for_job(1, runtime(tmp_path), environ) is None
    assert environ == {"PATH": str(tmp_path)}


def test_slurm_environment_is_left_alone(tmp_path):
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert claim_device_for_job(1, runtime(tmp_path), environ) is None
    assert environ == {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert not any(tmp_path.iterdir())


def test_job_without_gpu_takes_no_slot(tmp_path):
    environ = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert claim_device_for_job(0, runtime(tmp_path), environ) is None
    assert environ == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert not any(tmp_path.iterdir())


def test_slot_directory_is_per_host():
    host = socket.gethostname()
    assert slot_directory() == Path(tempfile.gettempdir()) / f"ldsbench-gpu-slots-{host}"
    assert slot_directory("/scratch/slots") == Path("/scratch/slots") / f"ldsbench-gpu-slots-{host}"


@pytest.fixture(autouse=True)
def release_claimed_slot():
    """claim_device_for_job holds its slot for the life of the process."""
    yield
    if device_slots._held_slot is not None:
        device_slots._held_slot.release()
        device_slots._held_slot = None
