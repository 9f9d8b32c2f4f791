"""Fixtures shared by the workflow tests."""

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: thread start-up costs more than it saves, and on a busy
    machine several threads per process slow everything down."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
