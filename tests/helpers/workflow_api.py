"""Driving the workflow from tests: dry runs through the Snakemake Python API,
real runs through the command line a user types."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def load_yaml(path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def default_config() -> dict:
    return load_yaml(ROOT / "config.yaml")


def tiny_config() -> dict:
    """The tiny benchmark, its external methods' files made absolute (the
    tests run it in other working directories)."""
    config = load_yaml(ROOT / "tests" / "configs" / "tiny.yaml")
    for method in config["methods"].values():
        if method["type"] == "external":
            method["path"] = str(ROOT / method["path"])
    return config


def with_changes(config: dict, changes: dict) -> dict:
    """Deep copy of ``config`` with dotted keys replaced: {"benchmark.subsets": 3}."""
    config = copy.deepcopy(config)
    for dotted, value in changes.items():
        keys = dotted.split(".")
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return config


def dry_run(config: dict, workdir: Path, targets=("all",), snakefile: Path = SNAKEFILE) -> list[str]:
    """Files a run would (re)create, as Snakemake's dry run decides them
    (``snakefile``: another copy of the workflow)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import RerunTrigger
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    # The API reads no profile: take the rerun triggers of the one every run uses.
    profile = yaml.safe_load((Path(snakefile).parent / "profiles" / "default" / "config.yaml").read_text())
    triggers = frozenset(RerunTrigger.parse_choices_set(profile["rerun-triggers"]))
    updated: list[str] = []
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(config=config, replace_workflow_config=True),
            snakefile=Path(snakefile),
            workdir=Path(workdir),
        )
        dag = workflow.dag(DAGSettings(targets=set(targets), rerun_triggers=triggers))
        dag.execute_workflow(executor="local", pseudo_executor="dryrun", updated_files=updated)
    return [str(Path(f)) for f in updated]


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow's files (no environment, results or history), to edit in a test."""
    ignore = shutil.ignore_patterns(".venv", ".git", "results", ".snakemake", "__pycache__", ".wheels", "*.egg-info", ".pytest_cache", ".ruff_cache")
    shutil.copytree(ROOT, destination, ignore=ignore)
    return Path(destination)


def workflow_command(config: dict, workdir: Path, *extra: str) -> list[str]:
    """``snakemake --cores 2`` in ``workdir`` with ``config`` as the only config file."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [
        str(SNAKEMAKE),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(config_path),
        "--replace-workflow-config",
        "--scheduler",
        "greedy",
        *extra,
    ]


def run_workflow(config: dict, workdir: Path, *extra: str, timeout: int = 1800, env: dict | None = None) -> subprocess.CompletedProcess:
    """A run to its end (``env``: the environment, if not this process's)."""
    return subprocess.run(workflow_command(config, workdir, *extra), capture_output=True, text=True, timeout=timeout, env=env)


def start_workflow(config: dict, workdir: Path, *extra: str) -> subprocess.Popen:
    """A run in the background, in its own process group (to kill it whole)."""
    command = workflow_command(config, workdir, *extra)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def copy_run(workdir: Path, destination: Path) -> Path:
    """Copy a finished run with its Snakemake metadata and file times."""
    shutil.copytree(workdir, destination, symlinks=True)
    return Path(destination)
