"""Real calls through the lab PBX with the baseline dialplan (no follow-me for the
extension called), plus checks of the call-test library itself.

Lab tests need `python -m lab up`; run e.g.
    .venv/bin/python -m pytest tests/test_lab_calls.py -n 2
(tests/conftest.py loads the labcall.fixtures plugin). A baseline test calls
its preferred device, or another one when follow-me is deployed for it on the
worker's host, and skips when follow-me covers every device there.
"""

from __future__ import annotations

import time

import pytest
from labcall import answer, answer_and_press, busy, device_state, occupy, parse_trace, place_call, ring, unreachable
from labcall.agents import SippAgent, free_port
from labcall.scenarios import uac_scenario
from labcall.trace import display_name, uri_user

LAB = pytest.mark.lab
TOL = 1.0  # seconds: what a behaviour test allows around a timing


def _has_followme(asterisk, ext: str) -> bool:
    out = asterisk(f"dialplan show {ext}@followme")
    return "There is no existence" not in out


def baseline_ext(asterisk, preferred: str, avoid: tuple[str, ...] = ()) -> str:
    """`preferred` if no follow-me is deployed for it on the lab host (the baseline
    dialplan then handles it), else another such device. tests/inventories/calls leaves 2006
    without one, so there always is one: none is a broken test setup."""
    candidates = [preferred] + [str(e) for e in range(2001, 2011) if str(e) != preferred]
    for ext in candidates:
        if ext not in avoid and not _has_followme(asterisk, ext):
            return ext
    pytest.fail("follow-me is deployed for every device on this lab host: no baseline extension left")


# --- real calls ------------------------------------------------------------------
@LAB
def test_answered_call(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2002")
    r = place_call(lab_host, ext, {ext: answer(after=2)})
    assert r.caller_status == 200, r.format()
    assert r.answered_by == ext, r.format()
    assert len(r.invites(ext)) == 1 and r.invites(ext)[0] == pytest.approx(0, abs=TOL), r.format()
    assert r.answer_time == pytest.approx(2, abs=TOL), r.format()
    assert r.destination is None, r.format()
    assert r.byes(ext), r.format()  # the caller's BYE reached the device
    others = [a for a in r.rung if a != ext]
    assert not others, r.format()


@LAB
def test_no_answer_goes_to_voicemail(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2003")
    r = place_call(lab_host, ext, {ext: ring()}, timeout=40)
    assert r.invites(ext) == [pytest.approx(0, abs=TOL)], r.format()
    assert r.cancels(ext) == [pytest.approx(20, abs=TOL)], r.format()  # Dial(...,20)
    assert r.caller_status == 200 and r.answered_by is None, r.format()
    assert r.destination["app"] == "VoiceMail", r.format()
    assert r.destination["data"].startswith(f"{ext}@default"), r.format()


@LAB
def test_outbound_call_reaches_the_carrier(lab_host):
    r = place_call(lab_host, "909121234567", carrier=answer(after=0.5), hold=0.5)
    invites = r.invite_events("carrier")
    assert len(invites) == 1, r.format()
    assert invites[0].user == "09121234567", r.format()
    assert invites[0].t == pytest.approx(0, abs=TOL), r.format()
    assert r.answered_by == "carrier" and r.caller_status == 200, r.format()
    assert not [a for a in r.rung if a != "carrier"], r.format()


@LAB
def test_busy_device_sends_caller_to_voicemail_at_once(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2004")
    r = place_call(lab_host, ext, {ext: busy()})
    assert r.invites(ext) == [pytest.approx(0, abs=TOL)], r.format()
    assert r.times(ext, "486", "out"), r.format()
    assert r.caller_status == 200 and r.answer_time < TOL, r.format()
    assert r.destination["app"] == "VoiceMail", r.format()
    assert r.destination["data"].startswith(f"{ext}@default"), r.format()


@LAB
def test_occupy_makes_the_device_in_use(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2005")
    with occupy(lab_host, ext) as occ:
        assert device_state(lab_host, ext) == "INUSE"
        assert occ.agent.running
    deadline = time.monotonic() + 5
    while device_state(lab_host, ext) != "NOT_INUSE" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert device_state(lab_host, ext) == "NOT_INUSE"


@LAB
def test_occupied_device_still_records_invites(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2007")
    with occupy(lab_host, ext) as occ:
        r = place_call(lab_host, ext, {ext: occ}, timeout=3)
    # Baseline Dial rings an in-use device too; the occupied agent rings (call waiting).
    assert r.invites(ext) == [pytest.approx(0, abs=TOL)], r.format()
    assert r.timed_out and r.cancels(ext), r.format()


@LAB
def test_unreachable_device_is_not_rung(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2008")
    r = place_call(lab_host, ext, {ext: unreachable()})
    assert not r.invites(ext) and ext not in r.rung, r.format()
    assert r.caller_status == 200 and r.answer_time < TOL, r.format()
    assert r.destination["app"] == "VoiceMail", r.format()


@LAB
def test_dtmf_info_reaches_the_caller(lab_host, asterisk):
    ext = baseline_ext(asterisk, "2006")
    r = place_call(lab_host, ext, {ext: answer_and_press("5", after=0.5, press_after=0.5)}, hold=2)
    assert r.answered_by == ext, r.format()
    sent = r.requests(ext, "INFO", "out")
    assert [e.t for e in sent] == [pytest.approx(1.0, abs=TOL)], r.format()
    assert "Signal=5" in sent[0].body, r.format()
    got = r.requests("caller", "INFO", "in")
    assert got and "Signal=5" in got[0].body, r.format()


@LAB
def test_goto_destination_is_reported(lab_host):
    r = place_call(lab_host, "701", hold=1)
    assert r.caller_status == 200 and r.answered_by is None, r.format()
    assert r.destination["context"] == "lab-dest", r.format()
    assert r.destination["exten"] == "701", r.format()


# --- the library itself (no lab: SIPp to SIPp on loopback) ---------------------------
_SAMPLE = """\
----------------------------------------------- 2026-11-26 07:04:45.367207
UDP message received [468] bytes :

INVITE sip:2002@10.87.0.1:20102 SIP/2.0\r
Via: SIP/2.0/UDP 10.87.0.11:5060;rport;branch=z9hG4bKPj1\r
From: "Zo\\"e" <sip:caller@10.87.0.11>;tag=abc\r
To: <sip:2002@10.87.0.1>\r
Call-ID: c1\r
CSeq: 100 INVITE\r
Alert-Info: <http://localhost>;info=alert-internal\r
Content-Length: 0\r
\r

-----------------------------------------------
Unexpected UDP message received:

INVITE sip:2002@10.87.0.1:20102 SIP/2.0

----------------------------------------------- 2026-11-26 07:04:46.000001
UDP message sent (300 bytes):

SIP/2.0 180 Ringing\r
CSeq: 100 INVITE\r
Call-ID: c1\r
\r

"""


def test_trace_parser():
    msgs = parse_trace(_SAMPLE)
    assert [m.label for m in msgs] == ["INVITE", "180"]
    inv, rng = msgs
    assert inv.direction == "in" and rng.direction == "out"
    assert inv.request_uri == "sip:2002@10.87.0.1:20102" and uri_user(inv.request_uri) == "2002"
    assert inv.headers["alert-info"] == "<http://localhost>;info=alert-internal"
    assert display_name(inv.headers["From"]) == 'Zo"e'
    assert rng.cseq_method == "INVITE" and rng.status == 180
    assert (rng.time - inv.time).total_seconds() == pytest.approx(0.632794)


def test_agents_on_loopback(tmp_path):
    """A device agent answering after 1 s and pressing 7, called by the caller
    scenario, both on 127.0.0.1: exercises the scenarios without a PBX."""
    ip = "127.0.0.1"
    dev_port = free_port(ip, range(25100, 25200))
    dev = SippAgent("dev", answer_and_press("7", after=1, press_after=0.3).scenario_xml(),
                    ip=ip, port=dev_port, workdir=tmp_path, lifetime=60)
    caller = SippAgent("caller", uac_scenario(caller_name="Bob", hold=1), ip=ip,
                       port=free_port(ip, range(25200, 25300)), workdir=tmp_path,
                       remote=f"{ip}:{dev_port}", service="2002", lifetime=60)
    try:
        dev.start()
        caller.start()
        assert caller.wait(15) == 0, caller.stderr_text()
        time.sleep(0.3)
    finally:
        caller.stop()
        dev.stop()
    seen = dev.messages()
    labels = [m.label for m in seen]
    assert labels[:4] == ["INVITE", "100", "180", "200"], labels
    assert "INFO" in labels and labels[-2:] == ["BYE", "200"], labels
    t0 = seen[0].time
    ok = next(m for m in seen if m.label == "200")
    info = next(m for m in seen if m.label == "INFO")
    assert (ok.time - t0).total_seconds() == pytest.approx(1.0, abs=0.1)
    assert (info.time - ok.time).total_seconds() == pytest.approx(0.3, abs=0.1)
    assert display_name(seen[0].headers["From"]) == "Bob"
    assert "Signal=7" in info.body
