"""pytest plugin of the call-test library (load with `pytest_plugins = ["labcall.fixtures"]`
in tests/conftest.py, or `-p labcall.fixtures`).

Fixtures:
  lab_host  (session) the lab PBX this worker owns: xdist worker gwN → the host
            with index N+1 (pbx1, pbx2…); no xdist → pbx1; FOLLOWME_LAB_HOST=N → pbxN
            (one worker). Fails when the lab is down.
  asterisk  a callable: asterisk("core show channels") → stdout of `asterisk -rx` on lab_host.
Marker:
  lab       the test needs the lab (`python -m lab up`); deselect with -m "not lab".
"""

from __future__ import annotations

import os

import pytest

from .agents import stop_all
from .hosts import Host, LabError, asterisk_rx, close_masters, lab_hosts, load_state


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs the lab PBXs up (`python -m lab up`): real calls through a real Asterisk")


def worker_number() -> int:
    """0 for xdist worker gw0 or no xdist, 1 for gw1…"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:])
    return 0


def host_for_worker(number: int | None = None) -> Host:
    """The lab host a pytest(-xdist) worker owns; raises LabError with the reason."""
    if number is None and os.environ.get("FOLLOWME_LAB_HOST", "").isdigit():
        number = int(os.environ["FOLLOWME_LAB_HOST"]) - 1  # a run of its own on lab host pbx<N>
    number = worker_number() if number is None else number
    hosts = sorted(lab_hosts(load_state()), key=lambda h: h.index)
    wanted = number + 1
    for host in hosts:
        if host.index == wanted:
            return host
    raise LabError(f"pytest worker gw{number} needs lab host pbx{wanted}, but the lab has "
                   f"{[h.name for h in hosts]}: run at most {len(hosts)} xdist workers "
                   f"(-n {len(hosts)}) or `python -m lab up --hosts {wanted}`")


@pytest.fixture(scope="session")
def lab_host() -> Host:
    problem = None
    try:
        host = host_for_worker()
        version = asterisk_rx(host, "core show version", timeout=15)
    except LabError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(f"the lab is not usable: {problem}", pytrace=False)
    if "Asterisk" not in version:
        pytest.fail(f"{host.name}: Asterisk does not answer `asterisk -rx` ({version.strip()!r}); "
                    "is the lab up? (`.venv/bin/python -m lab status`)", pytrace=False)
    yield host
    stop_all()
    close_masters()


@pytest.fixture
def asterisk(lab_host):
    """asterisk("pjsip show contacts") → stdout of `asterisk -rx` on this worker's lab host."""

    def run(command: str, timeout: float = 20) -> str:
        return asterisk_rx(lab_host, command, timeout=timeout)

    run.host = lab_host
    return run
