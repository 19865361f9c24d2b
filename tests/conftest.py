"""Shared fixtures: the lab host of this worker (labcall), and deploying declarations to it."""

import os

import pytest
from deploy import CALLS_INVENTORY, run_playbook

pytest_plugins = ["labcall.fixtures"]

# molecule/default/verify.yml runs this file after `molecule converge` deployed the example
# declarations (FOLLOWME_MOLECULE_VERIFY=1); the main run deploys the call declarations instead.
collect_ignore = [] if os.environ.get("FOLLOWME_MOLECULE_VERIFY") == "1" else ["test_molecule_verify.py"]


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
