"""Molecule verify: after `molecule converge` (site.yml with the example declarations of
inventory/lab/group_vars/pbx/followme.yml), one real call through every lab PBX.

Run only by molecule/default/verify.yml, which sets FOLLOWME_MOLECULE_VERIFY=1 (and
FOLLOWME_MOLECULE_HOSTS to the converged hosts); tests/conftest.py leaves it out of a plain
`pytest` run, since it needs the example declarations deployed, which other lab tests replace.

Extension 2001 is declared as: list ["2001", "2002", "909121234567#"], strategy
ringallv2-prim, initial_ring_time 7 (ring_time 20 and cid_name_prefix "FM " from
followme_defaults). A call to 2001 where device 2002 answers 9 s after the caller's INVITE:
  t≈0  2001 rings alone (initial ring time);
  t≈7  2002 and the carrier (Request-URI user 09121234567: the 9 is the outbound prefix)
       ring too, 2001 keeps ringing;
  t≈9  2002 answers; 2001 and the carrier are CANCELled.
Every leg shows the caller's name with the "FM " prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml  # ansible-core's dependency
from labcall import CARRIER, LabError, answer, asterisk_rx, get_host, lab_hosts, place_call, stop_all
from labcall.hosts import close_masters

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "lab" / "group_vars" / "pbx" / "followme.yml"

EXTENSION = "2001"
INITIAL_RING_TIME = 7.0   # s: 2001 rings alone
ANSWER_AT = 9.0           # s after the caller's INVITE: 2002 answers
TOL = 1.0                 # s around every timing
CARRIER_USER = "09121234567"
CID_PREFIX = "FM "


def _host_names() -> list[str]:
    names = [n.strip() for n in os.environ.get("FOLLOWME_MOLECULE_HOSTS", "").split(",") if n.strip()]
    if names:
        return names
    try:
        return [h.name for h in lab_hosts()]
    except LabError:
        return ["pbx1", "pbx2"]  # the test reports why the lab is not usable


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    stop_all()
    close_masters()


def test_example_declaration_is_the_one_this_test_expects():
    """The timings below follow from the example declaration of 2001: fail clearly when it changed."""
    example = yaml.safe_load(EXAMPLE.read_text())
    decl = example["followme"][EXTENSION]
    defaults = example.get("followme_defaults", {})
    assert decl["list"] == ["2001", "2002", "909121234567#"], decl
    assert decl["strategy"] == "ringallv2-prim", decl
    assert decl["initial_ring_time"] == INITIAL_RING_TIME, decl
    assert decl.get("ring_time", defaults.get("ring_time")) == 20, (decl, defaults)
    assert decl.get("enabled", True), decl
    assert defaults.get("cid_name_prefix") == CID_PREFIX, defaults


@pytest.mark.parametrize("host_name", _host_names())
def test_followme_2001_rings_2002_and_the_carrier_after_7s(host_name):
    try:
        host = get_host(host_name)
        deployed = asterisk_rx(host, f"dialplan show {EXTENSION}@followme")
    except LabError as exc:
        pytest.fail(f"the lab is not usable: {exc}", pytrace=False)
    assert "There is no existence" not in deployed, (
        f"{host_name}: no follow-me for {EXTENSION} in the running dialplan; run `molecule converge` first:\n"
        + deployed)

    r = place_call(host, EXTENSION, {"2002": answer(after=ANSWER_AT - INITIAL_RING_TIME)}, timeout=40)
    why = f"\n{r.format()}\n\n{host_name}: dialplan show {EXTENSION}@followme:\n{deployed}"

    assert r.caller_status == 200, why
    assert r.answered_by == "2002", why

    # t≈0: the primary device alone
    assert r.invites("2001") == [pytest.approx(0, abs=TOL)], why
    # t≈7: the rest of the list, all at once; the primary keeps ringing
    assert r.invites("2002") == [pytest.approx(INITIAL_RING_TIME, abs=TOL)], why
    carrier_invites = r.invite_events(CARRIER)
    assert len(carrier_invites) == 1, why
    assert carrier_invites[0].user == CARRIER_USER, why
    assert carrier_invites[0].t == pytest.approx(INITIAL_RING_TIME, abs=TOL), why
    # t≈9: 2002 answers, the others stop ringing
    assert r.answer_time == pytest.approx(ANSWER_AT, abs=TOL), why
    assert r.cancels("2001") == [pytest.approx(ANSWER_AT, abs=TOL)], why
    assert r.cancels(CARRIER) == [pytest.approx(ANSWER_AT, abs=TOL)], why
    assert not r.cancels("2002"), why
    # every leg shows the caller's name (the lab's `caller` endpoint sets it) once prefixed
    # with the cid_name_prefix of followme_defaults
    names = {e.from_name for leg in ("2001", "2002", CARRIER) for e in r.invite_events(leg)}
    assert len(names) == 1, why
    name = names.pop() or ""
    assert name.startswith(CID_PREFIX) and len(name) > len(CID_PREFIX), why
    assert not name.startswith(CID_PREFIX * 2), why
    # nobody else rang
    assert set(r.rung) == {"2001", "2002", CARRIER}, why
