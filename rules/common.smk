import hashlib
import sys
from pathlib import Path

# The package lives next to the step scripts; importable without installing.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from ldsbench.config import validate_config
from ldsbench.curvature_keys import curvature_key

config = validate_config(config)

R = config["results"]
M = config["benchmark"]["subsets"]
K = config["benchmark"]["seeds"]
METHODS = list(config["methods"])
MEASUREMENTS = list(config["measurements"])
THREADS = config["runtime"]["threads_per_job"]
# GPU rules declare one gpu (Snakemake counts it; the job picks its device
# through a slot, see ldsbench.device_slots); with device cpu they need none.
GPUS_PER_JOB = 0 if config["runtime"]["device"] == "cpu" else 1
PACKAGE = Path(workflow.basedir) / "workflow_scripts" / "ldsbench"
STEPS = "../workflow_scripts"
CONDA_ENV = "../envs/ldsbench.yaml"

# Each training rule sees only the settings that affect it, so that changing
# subset_steps does not retrain the full model (and everything after it).
FULL_TRAINING = {k: v for k, v in config["training"].items() if k != "subset_steps"}
SUBSET_TRAINING = {k: v for k, v in config["training"].items() if k != "steps"}

# Curvature factors are shared by every influence method with the same
# curvature settings: the file name is a hash of those settings.
CURVATURES = {
    curvature_key(m["curvature"]): m["curvature"]
    for m in config["methods"].values()
    if m["type"] == "influence"
}


wildcard_constraints:
    subset=r"\d+",
    seed=r"\d+",
    method=r"[A-Za-z][A-Za-z0-9_-]*",
    measurement=r"[A-Za-z][A-Za-z0-9_-]*",
    curvature=r"(kfac|ekfac)-[0-9a-f]+",


def code_version(*modules):
    """Hash of package modules, passed as a param so that editing the code of
    a cheap stage reruns it (Snakemake tracks only the step script itself)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update((PACKAGE / module).read_bytes())
    return digest.hexdigest()[:16]


def model_dir(subset, seed):
    return f"{R}/models/subset_{subset}/seed_{seed}"


def subset_model_dirs():
    return [model_dir(j, k) for j in range(M) for k in range(K)]


def method_curvature(wildcards):
    method = config["methods"][wildcards.method]
    if method["type"] != "influence":
        return []
    return f"{R}/curvature/{curvature_key(method['curvature'])}.pt"


def lds_outputs():
    files = [f"{R}/lds/{method}/{measurement}.parquet" for method in METHODS for measurement in MEASUREMENTS]
    if K >= 2:
        files += [f"{R}/lds/retraining_ceiling/{measurement}.parquet" for measurement in MEASUREMENTS]
    return files


def summary_outputs():
    return [
        f"{R}/lds_summary.parquet",
        f"{R}/lds_per_query.parquet",
        f"{R}/lds_sweep.parquet",
        f"{R}/lds_summary.png",
        f"{R}/lds_vs_damping.png",
        f"{R}/lds_summary.md",
    ]
