"""The venv requirements and the conda environment list the same packages."""

import re

import yaml

from workflow_api import ROOT


def _requirements(lines):
    return {re.split(r"[<>=!~ ]", line, maxsplit=1)[0].lower(): line.replace(" ", "") for line in lines if line and not line.startswith("#")}


def test_conda_environment_matches_requirements():
    pip = _requirements((ROOT / "envs" / "requirements.txt").read_text().splitlines())
    conda = yaml.safe_load((ROOT / "envs" / "ldsbench.yaml").read_text())
    pip_section = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    assert _requirements(pip_section) == pip


def test_curvlinops_is_pinned():
    assert "curvlinops-for-pytorch==3.0.1" in (ROOT / "envs" / "requirements.txt").read_text()
