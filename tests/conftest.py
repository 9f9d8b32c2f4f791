"""Fixtures shared by the workflow tests."""

import pytest

from workflow_api import run_workflow, tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One complete run of the tiny benchmark: (config, workdir). Tests that
    change files copy the workdir first (see ``copy_run``)."""
    workdir = tmp_path_factory.mktemp("tiny")
    config = tiny_config()
    result = run_workflow(config, workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return config, workdir
