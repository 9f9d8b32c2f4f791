"""A throwaway single-node SLURM cluster for tests. Needs root and Debian's
packages: ``apt-get install slurm-wlm munge``.

Everything lives in one temporary folder: its own MUNGE key and socket, a
``slurm.conf`` naming this host with its CPUs and memory, state, spool, logs
and pid files. Client commands find the cluster through ``SLURM_CONF`` (see
:meth:`SlurmCluster.env`) and, while it runs, through the link
``/run/slurm/conf``, where SLURM clients look when there is neither
``SLURM_CONF`` nor ``/etc/slurm/slurm.conf`` (as on a configless cluster).
The link is needed because the Snakemake SLURM executor drops every
``SLURM_*`` variable, ``SLURM_CONF`` included, before it calls ``srun``
inside a job. Nothing under /etc is read or changed.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
CONF_LINK = Path("/run/slurm/conf")


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def unavailable_reason() -> str | None:
    """Why no test cluster can be started on this machine, or None if one can."""
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return f"SLURM/MUNGE programs not found ({', '.join(missing)}); install them with: apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    for path in (SYSTEM_CONF, CONF_LINK):
        if os.path.lexists(path):
            return f"{path} exists: this machine has a SLURM configuration of its own, which jobs of a test cluster would read"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict:
    """CPUs, sockets, cores and memory of this host, as slurmd detects them."""
    output = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", output.splitlines()[0]))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {key: int(fields[key]) for key in keys if key in fields}


class SlurmCluster:
    """This host as the only node (address 127.0.0.1) of the given partitions.

    No accounting: ``sacct`` does not work, ``squeue`` reports job states (and
    keeps finished jobs for an hour, MinJobAge). ``min_memory_mb`` lets the
    node accept jobs that ask for more memory than the host has: memory is
    not a consumable resource here, only a per-job upper bound.
    """

    def __init__(self, partitions=("debug",), min_memory_mb: int = 0):
        self.partitions = list(dict.fromkeys(partitions))
        self.min_memory_mb = min_memory_mb
        self.node = socket.gethostname().split(".")[0]
        self.dir = Path(tempfile.mkdtemp(prefix="ldsbench-slurm-"))
        self.conf = self.dir / "etc" / "slurm.conf"
        self.munge_dir = self.dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.hardware: dict = {}
        self._daemons: dict[str, subprocess.Popen] = {}
        self._linked = False
        self._made_run_dir = False

    def env(self, base=None) -> dict:
        """Environment for client commands (sbatch, squeue, snakemake --executor slurm)."""
        env = dict(os.environ if base is None else base)
        for name in list(env):
            # A test run inside a SLURM job must not pass that job's settings on.
            if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")):
                del env[name]
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), *SBIN])
        return env

    def run(self, *args, check=True, timeout=30) -> subprocess.CompletedProcess:
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({result.returncode}): {result.stderr.strip()}\n{self.logs()}")
        return result

    # -- start and stop ----------------------------------------------------------------

    def start(self, timeout: float = 60) -> SlurmCluster:
        self.dir.chmod(0o755)  # munged runs as the munge user and must reach its folder
        self._start_munge()
        for sub in ("etc", "state", "spool"):
            (self.dir / sub).mkdir()
        self._write_conf()
        self._link_conf()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", self.conf])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", self.conf, "-N", self.node])
        self._wait_idle(timeout)
        return self

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o755)  # munged wants its socket folder searchable by all
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.munge_dir / 'munged.pid'}",
                f"--log-file={self.munge_dir / 'munged.log'}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
            ],
            user=munge.pw_uid,
            group=munge.pw_gid,
        )
        deadline = time.monotonic() + 20
        while not self.munge_socket.exists():
            if time.monotonic() > deadline or self._daemons["munged"].poll() is not None:
                raise RuntimeError(f"munged did not start\n{self.logs()}")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        hardware = _node_hardware()
        self.hardware = dict(hardware, RealMemory=max(hardware.get("RealMemory", 1024), self.min_memory_mb))
        node = " ".join(f"{key}={value}" for key, value in self.hardware.items())
        partitions = "\n".join(
            f"PartitionName={name} Nodes={self.node} Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP" for i, name in enumerate(self.partitions)
        )
        d = self.dir
        self.conf.write_text(
            f"""# Single-node test cluster (tests/slurm_cluster.py)
ClusterName=ldsbench-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d / "state"}
SlurmdSpoolDir={d / "spool"}
SlurmctldPidFile={d / "slurmctld.pid"}
SlurmdPidFile={d / "slurmd.pid"}
SlurmctldLogFile={d / "slurmctld.log"}
SlurmdLogFile={d / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# The node may claim more memory than the host has (see min_memory_mb).
SlurmdParameters=config_overrides
ReturnToService=2
# squeue (the only job status source without accounting) keeps finished jobs
# for an hour.
MinJobAge=3600
KillWait=5
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 {node} State=UNKNOWN
{partitions}
"""
        )

    def _link_conf(self) -> None:
        self._made_run_dir = not CONF_LINK.parent.exists()
        CONF_LINK.parent.mkdir(parents=True, exist_ok=True)
        CONF_LINK.symlink_to(self.conf.parent)
        self._linked = True

    def _unlink_conf(self) -> None:
        if self._linked and CONF_LINK.is_symlink() and Path(os.readlink(CONF_LINK)) == self.conf.parent:
            CONF_LINK.unlink()
            if self._made_run_dir:
                try:
                    CONF_LINK.parent.rmdir()
                except OSError:
                    pass
        self._linked = False

    def _spawn(self, name, command, **kwargs) -> None:
        with open(self.dir / f"{name}.out", "w") as out:
            self._daemons[name] = subprocess.Popen(
                [str(c) for c in command],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
                **kwargs,
            )

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, process in self._daemons.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}\n{self.logs()}")
            result = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False)
            state = result.stdout.strip()
            if result.returncode == 0 and state and all(line.startswith("idle") for line in state.splitlines()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle within {timeout} s (sinfo: {state!r})\n{self.logs()}")

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (by pid)."""
        running = self._daemons.get("slurmctld")
        if running is not None and running.poll() is None:
            self.run("scancel", "--full", "--user=root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                active = self.run("squeue", "--noheader", "--states=RUNNING,COMPLETING", check=False)
                if active.returncode != 0 or not active.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self._daemons.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._unlink_conf()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- inspection ----------------------------------------------------------------------

    def logs(self, tail: int = 4000) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for path in (
            self.dir / "slurmctld.log",
            self.dir / "slurmd.log",
            self.dir / "munged.out",
            self.munge_dir / "munged.log",
        ):
            if path.exists():
                # munged logs an info line for every credential slurmd checks.
                lines = [line for line in path.read_text(errors="replace").splitlines() if "Unauthorized credential" not in line]
                parts.append(f"----- {path} -----\n" + "\n".join(lines)[-tail:])
        return "\n".join(parts)

    def jobs(self) -> list[dict]:
        """Every job slurmctld knows (array tasks one by one, once they ran):
        id, partition, state, comment, workdir."""
        output = self.run("squeue", "--noheader", "--states=all", "--array", "--format=%i|%P|%T|%k|%Z").stdout
        keys = ("id", "partition", "state", "comment", "workdir")
        return [dict(zip(keys, line.split("|", 4))) for line in output.splitlines() if line.strip()]

    def node_states(self) -> list[str]:
        """``sinfo`` state of each node (idle, mixed, allocated, completing, ...)."""
        output = self.run("sinfo", "--noheader", "--Node", "--format=%N %T").stdout
        return [line.split()[1] for line in sorted(set(output.splitlines())) if line.strip()]

    def job_info(self, job_id) -> dict:
        """``scontrol show job`` as a dict."""
        output = self.run("scontrol", "--oneliner", "show", "job", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", output))
