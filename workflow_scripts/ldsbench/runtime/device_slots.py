"""Give each GPU job on this machine its own device, through CUDA_VISIBLE_DEVICES.

Snakemake counts a ``gpu`` resource but never tells a job which device to
use, so without help every job would pick ``cuda:0``. Here each job takes a
*slot*: slot j of device d is a lock file, and a job owns the slot while it
holds a non-blocking exclusive ``flock`` on it. ``jobs_per_gpu`` slots per
device let small models share a GPU.

Why file locks: the kernel drops a process's ``flock`` when the process
exits, however it exits (SIGKILL and out-of-memory kills included), so a
dead job never leaves a slot taken, and there is no state to clean up. The
locks also coordinate several Snakemake runs on the same machine. Lock files
are never deleted: removing one while a job holds it would let a second job
lock a new file of the same name. ``lslocks`` shows which process holds which
slot.

Under SLURM nothing is done: SLURM sets CUDA_VISIBLE_DEVICES for each job
itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_log = logging.getLogger(__name__)


@dataclass
class DeviceSlot:
    """Slot ``slot`` of ``device``, held while its lock file descriptor is open."""

    device: str
    slot: int
    path: Path
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        """Close the lock file, which frees the slot (safe to call twice)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# The slot this process holds. A plain module-level reference keeps the lock
# file descriptor open for the life of the job process.
_held_slot: DeviceSlot | None = None


def discover_devices(environ=os.environ) -> list[str]:
    """The devices this job may use, without initialising CUDA here.

    CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises, so the
    variable must be narrowed before that; asking torch would be too late.
    If the variable is set, its entries (indices or UUIDs) are the user's
    choice of devices; an empty value means none, and, as in CUDA, entries
    from the first negative index on (``-1``) are ignored. Otherwise
    ``nvidia-smi`` lists the GPUs; without it there are none.
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = []
        for entry in (e.strip() for e in visible.split(",")):
            if not entry or entry.startswith("-"):
                break
            devices.append(entry)
        return devices
    nvidia_smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if nvidia_smi is None:
        return []
    try:
        listing = subprocess.run(
            [nvidia_smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):  # no driver loaded, for example
        return []
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def slot_directory(parent: str | os.PathLike | None = None) -> Path:
    """Where the lock files live: ``ldsbench-gpu-slots-<host>`` under
    ``parent`` (runtime.gpu_slot_dir), by default the temporary directory.

    The host name keeps machines apart when ``parent`` is on a shared file
    system: device 0 of one node is not device 0 of another.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    return parent / f"ldsbench-gpu-slots-{socket.gethostname()}"


def acquire_slot(
    devices: list[str],
    jobs_per_gpu: int,
    slot_dir: str | os.PathLike,
    poll_seconds: float = 1.0,
    log: logging.Logger | None = None,
) -> DeviceSlot:
    """Take a free slot on the least busy device, waiting while all are taken.

    All slots can be busy when Snakemake's ``--resources gpu=N`` exceeds
    devices x jobs_per_gpu, or when another run shares the machine; waiting
    keeps each device at ``jobs_per_gpu`` jobs instead of failing the job.
    """
    if not devices:
        raise ValueError("no devices to take a slot on")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be at least 1, got {jobs_per_gpu}")
    log = log or _log
    slot_dir = Path(slot_dir)
    _make_shared_directory(slot_dir)
    waiting_since = None
    while True:
        with _exclusive_lock(slot_dir / "choosing.lock"):
            slot = _take_least_busy_slot(devices, jobs_per_gpu, slot_dir)
        if slot is not None:
            if waiting_since is not None:
                log.info("a GPU slot came free after %.1f s", time.monotonic() - waiting_since)
            return slot
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.info(
                "all %d GPU slots (%d device(s) x jobs_per_gpu %d) in %s are taken; waiting for one",
                len(devices) * jobs_per_gpu,
                len(devices),
                jobs_per_gpu,
                slot_dir,
            )
        time.sleep(poll_seconds)


def claim_device_for_job(
    gpu_requested: int,
    runtime: dict,
    environ=os.environ,
    log: logging.Logger | None = None,
) -> str | None:
    """Give this job process one device and narrow CUDA_VISIBLE_DEVICES to it.

    Call it before anything initialises CUDA. ``gpu_requested`` is the job's
    declared ``gpu`` resource: 0 takes no slot, any other value one slot (a
    job here uses one device). ``runtime`` is the config's ``runtime``
    section (``jobs_per_gpu``, ``gpu_slot_dir``). Returns the device, or
    None when the job takes none: under SLURM (which assigns devices
    itself), when no GPU is requested, or when none is visible (the job then
    runs on CPU). The slot is held until the process exits.
    """
    global _held_slot
    log = log or _log
    if "SLURM_JOB_ID" in environ:
        log.info("SLURM assigns devices (CUDA_VISIBLE_DEVICES=%s)", environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        return None
    if not gpu_requested:
        log.info("no GPU requested (gpu resource 0)")
        return None
    devices = discover_devices(environ)
    if not devices:
        log.info("no GPU visible: runs on CPU")
        return None
    if _held_slot is not None:  # one slot per process
        _held_slot.release()
        _held_slot = None
    jobs_per_gpu = int(runtime.get("jobs_per_gpu") or 1)
    slot = acquire_slot(devices, jobs_per_gpu, slot_directory(runtime.get("gpu_slot_dir")), log=log)
    _held_slot = slot
    if "CUDA_VISIBLE_DEVICES" not in environ:
        # The indices came from nvidia-smi, which numbers GPUs in PCI bus
        # order; CUDA numbers them fastest first unless told otherwise.
        environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    environ["CUDA_VISIBLE_DEVICES"] = slot.device
    log.info("GPU %s (slot %d of %d; lock %s)", slot.device, slot.slot, jobs_per_gpu, slot.path)
    return slot.device


def _take_least_busy_slot(devices: list[str], jobs_per_gpu: int, slot_dir: Path) -> DeviceSlot | None:
    """Lock every free slot, keep the one on the device with the fewest busy
    slots (first device, then lowest slot, on ties), and free the others.

    Only one process runs this at a time (the caller holds choosing.lock), so
    briefly locking the free slots cannot make another job think them busy.
    """
    free = {}
    for device_index, device in enumerate(devices):
        for slot in range(jobs_per_gpu):
            path = slot_dir / f"gpu-{_file_safe(device)}.slot-{slot}.lock"
            fd = _open_lock_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            free[device_index, slot] = (path, fd)
    if not free:
        return None
    busy = {i: jobs_per_gpu - sum(1 for d, _ in free if d == i) for i in range(len(devices))}
    chosen = min(free, key=lambda key: (busy[key[0]], key[0], key[1]))
    for key, (_, fd) in free.items():
        if key != chosen:
            os.close(fd)
    path, fd = free[chosen]
    return DeviceSlot(device=devices[chosen[0]], slot=chosen[1], path=path, _fd=fd)


@contextmanager
def _exclusive_lock(path: Path):
    """Block until this process alone holds ``path``'s lock."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    """Open a lock file read-only, creating it if needed. ``flock`` needs no
    write access, so jobs of other users can lock a file this user made."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)


def _make_shared_directory(path: Path) -> None:
    """Create the slot directory writable by everyone (sticky, like /tmp), so
    that the jobs of every user of the machine share one set of slots."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    try:
        path.chmod(0o1777)
    except OSError:
        pass


def _file_safe(device: str) -> str:
    """A device name (index, GPU-<uuid>, MIG-GPU-<uuid>/1/0) as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", device)
