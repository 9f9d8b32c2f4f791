"""Each workflow job's peak resident size, as the kernel counts it.

Snakemake's benchmark files sample a job's resident size (every second for
the first 30 samples, then every 30 s), so the peak of a job that runs longer
than that can fall between two samples. ``record_job_peaks`` puts a
``sitecustomize`` module on the jobs' ``PYTHONPATH`` that writes, when a step
script's process exits, its high-water mark (``getrusage``'s ``ru_maxrss``)
with the job's rule and wildcards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_SITECUSTOMIZE = """\
import atexit
import json
import os
import resource


def _record_peak():
    import __main__

    job = getattr(__main__, "snakemake", None)  # set in step scripts only
    if job is None:
        return
    record = {
        "rule": job.rule,
        "wildcards": dict(job.wildcards.items()),
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    }
    path = os.path.join(os.environ["JOB_PEAKS_DIR"], f"{os.getpid()}.json")
    with open(path, "w") as stream:
        json.dump(record, stream)


atexit.register(_record_peak)
"""


def record_job_peaks(folder: Path) -> dict[str, str]:
    """Environment under which every step script records its peak in
    ``folder``: pass it to ``run_workflow(..., env=...)``."""
    folder = Path(folder)
    (folder / "site").mkdir(parents=True, exist_ok=True)
    (folder / "site" / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder / "site"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "JOB_PEAKS_DIR": str(folder)}


def job_peaks(folder: Path) -> list[dict]:
    """The records ``record_job_peaks`` made: rule, wildcards, peak_bytes."""
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))]
