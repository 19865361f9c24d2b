"""Shared fixtures: the lab host of this worker (labcall), and deploying declarations to it."""

import pytest
from deploy import CALLS_INVENTORY, run_playbook

pytest_plugins = ["labcall.fixtures"]


@pytest.fixture(scope="session")
def call_declarations(lab_host):
    """Deploy tests/inventories/calls to this worker's lab host once; the call tests rely on it."""
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=lab_host.name)
    assert run.ok, run.output
    return lab_host


@pytest.fixture
def redeploy_after(lab_host):
    """For tests that change what is deployed: put the call declarations back afterwards."""
    yield
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=lab_host.name)
    assert run.ok, run.output
