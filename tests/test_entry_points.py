"""Follow-me reached from every way a call arrives, by real SIP calls (README "Hooking follow-me
into the site's dialplan").

The site dialplan is the lab's (lab/asterisk/extensions.conf); the declarations are the call tests'
(tests/inventories/calls): 2001 rings alone for 2 s, then 2002, 2003 and the mobile 909121234567#
(the carrier's leg) for 3 s, then voicemail; 2009 (ringallv2) rings itself 5 s, joined at 2 s by 2010
and the mobile. 2006 has no follow-me: it is the lab's operator. A follow-me that runs shows as
INVITEs to its list's devices at the timeline's times; one that must not run, as none at all.
"""

from __future__ import annotations

import base64
import re
import shlex

import pytest
from deploy import CALLS_INVENTORY, run_playbook
from labcall import (
    CARRIER,
    EXTENSIONS,
    answer,
    asterisk_rx,
    attended_transfer,
    blind_transfer,
    place_call,
    ssh,
)

from lab.host import baseline_files

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("call_declarations", "site_dialplan")]

TOLERANCE = 1.0
AGENTS = [*EXTENSIONS, CARRIER]
OUTSIDE = "09121234567"  # the caller's number on calls from the trunk
MAIN_NUMBER, OPERATOR, QUEUE, RING_GROUP, RING_GROUP_WRONG, QUEUE_LOCAL = (f"0215551000{i}" for i in range(6))
# 2001's follow-me as a timeline from t0: (agent, INVITE at, CANCEL at)
FOLLOWME_2001 = [("2001", 0, 2), ("2002", 2, 5), ("2003", 2, 5), (CARRIER, 2, 5)]
# The deploy tool's managed line in extensions.conf (kept when the lab's baseline is pushed).
MANAGED_INCLUDE = re.compile(r'^[ \t]*#(?:try)?include[ \t]+"?extensions_followme\.conf"?[ \t]*\n?', re.M)
SYNCED = ("extensions.conf", "features.conf", "queues.conf", "pjsip.conf", "modules.conf")


@pytest.fixture(scope="module")
def site_dialplan(lab_host, call_declarations):
    """The lab host runs this branch's baseline site config (lab/asterisk/): a lab started before
    these files changed gets them pushed and reloaded (the deploy tool's include line is kept);
    on a fresh lab this only compares."""
    wanted = baseline_files(lab_host)
    pushed = []
    for name in SYNCED:
        current = ssh(lab_host, f"cat /etc/asterisk/{name} 2>/dev/null || true").stdout
        text = wanted[name]
        if name == "extensions.conf":
            text += "".join(m.group(0).rstrip("\n") + "\n" for m in MANAGED_INCLUDE.finditer(current))
        if current != text:
            _write(lab_host, f"/etc/asterisk/{name}", text)
            pushed.append(name)
    if pushed:
        asterisk_rx(lab_host, "module reload res_pjsip.so", "module reload features", "dialplan reload")
        loaded = "1 modules loaded" in asterisk_rx(lab_host, "module show like app_queue.so")
        asterisk_rx(lab_host, "module reload app_queue.so" if loaded else "module load app_queue.so")
    assert "lab-sales" in asterisk_rx(lab_host, "queue show lab-sales"), "app_queue is not running lab-sales"
    assert "*2" in asterisk_rx(lab_host, "features show"), "features.conf: atxfer *2 is not active"
    return pushed


def _write(host, path, text):
    """Replace a file of the host atomically, owned like asterisk.conf."""
    quoted, blob = shlex.quote(path), base64.b64encode(text.encode()).decode()
    ssh(host, f"echo {blob} | base64 -d > {quoted}.labsync && chown --reference=/etc/asterisk/asterisk.conf "
              f"{quoted}.labsync && mv {quoted}.labsync {quoted}")


def check_rings(result, rings, t0: float = 0.0) -> None:
    """rings: [(agent, INVITE at, CANCEL at or None)], times from t0; every agent not named must
    get no INVITE at all (from t0 on)."""
    timeline = result.format()
    for agent in AGENTS:
        expected = [(start + t0, None if end is None else end + t0) for a, start, end in rings if a == agent]
        invites = [t for t in result.invites(agent) if t >= t0 - TOLERANCE]
        assert len(invites) == len(expected), f"{agent}: INVITEs at {invites}, expected {expected}\n{timeline}"
        for seen, (start, _) in zip(invites, expected, strict=True):
            assert abs(seen - start) <= TOLERANCE, f"{agent}: INVITE at {seen:.2f}, expected {start:.2f}\n{timeline}"
        ends = [end for _, end in expected if end is not None]
        cancels = [t for t in result.cancels(agent) if t >= t0 - TOLERANCE]
        assert len(cancels) == len(ends), f"{agent}: CANCELs at {cancels}, expected {ends}\n{timeline}"
        for seen, end in zip(cancels, ends, strict=True):
            assert abs(seen - end) <= TOLERANCE, f"{agent}: CANCEL at {seen:.2f}, expected {end:.2f}\n{timeline}"


def caller_sent(result, method: str) -> float:
    """t of the (first) request of `method` the caller sent."""
    times = [e.t for e in result.for_agent("caller") if e.direction == "out" and e.method_or_status == method]
    assert times, f"the caller sent no {method}\n{result.format()}"
    return times[0]


def agent_sent(result, agent: str, method: str) -> list[float]:
    return [e.t for e in result.for_agent(agent) if e.direction == "out" and e.method_or_status == method]


# -- internal calls ------------------------------------------------------------------------------

def test_internal_call(lab_host):
    """from-internal: the hook line sends 2001 to follow-me."""
    result = place_call(lab_host, "2001")
    check_rings(result, FOLLOWME_2001)
    assert result.destination and result.destination["app"] == "VoiceMail", result.format()


# -- calls from the trunk (a DID) ----------------------------------------------------------------

def test_did_call_from_the_carrier(lab_host):
    """from-carrier: DID 02155512001 -> Goto(from-internal,2001,1) -> the same follow-me, and every
    leg shows the outside caller's number (the mobile's leg included)."""
    result = place_call(lab_host, "02155512001", trunk_caller=OUTSIDE)
    check_rings(result, FOLLOWME_2001)
    assert result.destination and result.destination["app"] == "VoiceMail", result.format()
    assert result.destination["channel"].startswith("PJSIP/carrier-"), result.format()  # it came from the trunk
    for agent in ("2001", "2002", "2003", CARRIER):
        (invite,) = result.invite_events(agent)
        assert f"sip:{OUTSIDE}@" in invite.headers["From"], result.format()


def test_unknown_did_is_refused(lab_host):
    """A number of the trunk that is no DID of the site rings nobody (and never reaches from-internal)."""
    result = place_call(lab_host, "909121234567", trunk_caller=OUTSIDE)
    check_rings(result, [])
    assert (result.caller_status or 0) >= 400, result.format()


# -- an IVR option (a Goto) -------------------------------------------------------------------------

def test_ivr_option(lab_host):
    """The main number's IVR answers; the caller presses 1 (a DTMF INFO); option 1 is
    Goto(from-internal,2001,1): 2001's follow-me runs from that moment."""
    result = place_call(lab_host, MAIN_NUMBER, trunk_caller=OUTSIDE, digits="1", press_after=1.0, hold=7)
    assert result.caller_status == 200 and result.answered_by is None, result.format()
    pressed = caller_sent(result, "INFO")
    assert pressed >= result.answer_time + 0.5, result.format()
    check_rings(result, FOLLOWME_2001, t0=pressed)


# -- transfers -------------------------------------------------------------------------------------

def test_blind_transfer(lab_host):
    """A trunk call to the operator (2006); 2006 answers and blind-transfers it to 2001 with a SIP
    REFER: the transferred caller runs 2001's follow-me, dialed in the operator's context."""
    result = place_call(lab_host, OPERATOR, {"2006": blind_transfer("2001", after=0.5, refer_after=1.0)},
                        trunk_caller=OUTSIDE, hold=8)
    (referred,) = agent_sent(result, "2006", "REFER")
    assert [e.method_or_status for e in result.for_agent("2006") if e.direction == "in"
            and e.cseq_method == "REFER"][:1] == ["202"], result.format()
    # Asterisk's last NOTIFY reports the transfer done (sipfrag 200), then the operator hangs up.
    notifies = result.requests("2006", "NOTIFY", "in")
    assert notifies and notifies[-1].body.strip().startswith("SIP/2.0 200"), result.format()
    assert len(agent_sent(result, "2006", "BYE")) == 1, result.format()
    assert result.invites("2006") == [pytest.approx(0, abs=TOLERANCE)], result.format()
    check_rings(result, FOLLOWME_2001, t0=referred)
    # The legs carry the transferred caller's number, not the operator's.
    assert f"sip:{OUTSIDE}@" in result.invite_events("2002")[0].headers["From"], result.format()


def test_attended_transfer(lab_host):
    """The operator (2006) answers a trunk call, presses *2 (atxfer) and dials 2001: the consultation
    call runs 2001's follow-me; 2002 answers it; the operator hangs up, which hands the caller to 2002."""
    operator = attended_transfer("*22001", after=0.5, press_after=1.0, hangup_after=4.5, digit_gap=0.3)
    result = place_call(lab_host, OPERATOR, {"2006": operator, "2002": answer(after=1)},
                        trunk_caller=OUTSIDE, hold=11)
    dialed = agent_sent(result, "2006", "INFO")[-1]  # the last digit of 2001: the consultation starts
    check_rings(result, [("2001", 0, 3), ("2002", 2, None), ("2003", 2, 3),
                         (CARRIER, 2, 3)], t0=dialed)
    (hung_up,) = agent_sent(result, "2006", "BYE")
    assert result.answered_by == "2002", result.format()
    (taken,) = result.answers[-1:]
    assert taken.agent == "2002" and taken.t < hung_up < (taken.ended or 1e9), result.format()
    # The consultation is the operator's own call: its legs show the operator, as any attended transfer.
    assert "sip:2006@" in result.invite_events("2002")[0].headers["From"], result.format()


# -- queues and ring groups: follow-me must not run -------------------------------------------------

def test_queue_rings_members_devices_only(lab_host):
    """Queue lab-sales (members PJSIP/2001, PJSIP/2009, ringall, 4 s): only the members' devices
    ring; none of 2001's or 2009's follow-me list (2002, 2003, 2010, the mobile) ever does."""
    result = place_call(lab_host, QUEUE, trunk_caller=OUTSIDE)
    check_rings(result, [("2001", 0, 4), ("2009", 0, 4)])
    assert (result.caller_status or 0) >= 400, result.format()


def test_queue_call_answered_by_a_member(lab_host):
    result = place_call(lab_host, QUEUE, {"2009": answer(after=1)}, trunk_caller=OUTSIDE, hold=3)
    assert result.answered_by == "2009", result.format()
    check_rings(result, [("2001", 0, 1), ("2009", 0, None)])


def test_queue_with_local_members_in_a_context_of_their_own(lab_host):
    """Local-channel members (Local/2001@queue-member/n) that dial the device: still no follow-me."""
    result = place_call(lab_host, QUEUE_LOCAL, trunk_caller=OUTSIDE)
    check_rings(result, [("2001", 0, 4), ("2009", 0, 4)])


def test_queue_call_transferred_by_the_member_runs_the_targets_follow_me(lab_host):
    """Nothing of the queue sticks to the call: the member who answers (2009) blind-transfers the
    caller to 2001, and 2001's follow-me runs as for any other call."""
    result = place_call(lab_host, QUEUE, {"2009": blind_transfer("2001", after=0.5, refer_after=1.0)},
                        trunk_caller=OUTSIDE, hold=8)
    (referred,) = agent_sent(result, "2009", "REFER")
    check_rings(result, FOLLOWME_2001, t0=referred)


def test_ring_group_rings_members_devices_only(lab_host):
    result = place_call(lab_host, RING_GROUP, trunk_caller=OUTSIDE)
    check_rings(result, [("2001", 0, 4), ("2009", 0, 4)])


def test_ring_group_of_extensions_would_run_every_members_follow_me(lab_host):
    """The counter-example the recipe avoids: members dialed as extensions (Local/<ext>@from-internal)
    run their follow-me: 2002, 2003, 2010 and the mobile (twice) ring for a group call."""
    result = place_call(lab_host, RING_GROUP_WRONG, trunk_caller=OUTSIDE)
    check_rings(result, [("2001", 0, 2), ("2002", 2, 4), ("2003", 2, 4), ("2009", 0, 4), ("2010", 2, 4),
                         (CARRIER, 2, 4), (CARRIER, 2, 4)])



# -- followme_include_file: the include line in another file (FreePBX: extensions_custom.conf) -------
# A FreePBX-shaped site: extensions.conf is FreePBX's (it rewrites it: the role must not touch it) and
# includes extensions_custom.conf, the site's own. The contexts and their include order are FreePBX's
# (core's etc/extensions.conf and the ext-local it generates), reduced to extension 2001.
FREEPBX_EXTENSIONS = """\
; FreePBX-shaped site dialplan (tests/test_entry_points.py): FreePBX's contexts and include order,
; reduced to extension 2001. FreePBX rewrites this file: nothing else may write to it.
[general]
static = yes
writeprotect = yes

#include extensions_custom.conf

[from-internal]
include => from-internal-xfer
[from-internal-xfer]
include => from-internal-custom
include => from-internal-additional
[from-internal-additional]
include => ext-local
include => outbound-allroutes
[outbound-allroutes]
exten => _9X.,1,Dial(PJSIP/${EXTEN:1}@carrier,60)
[ext-local]
include => ext-local-custom
exten => 2001,1,Dial(PJSIP/2001,4)
 same => n,VoiceMail(2001@default,u)
exten => 2006,1,Dial(PJSIP/2006,4)
 same => n,VoiceMail(2006@default,u)
[from-did-direct]
include => ext-findmefollow
include => ext-local
[ext-findmefollow]
[from-carrier]
include => from-pstn
[from-pstn]
exten => 02155512001,1,Goto(from-did-direct,2001,1)  ; inbound route, destination "Extension 2001"
exten => 02155512011,1,Goto(from-internal,2001,1)    ; inbound route, Custom Destination from-internal,2001,1
"""
FREEPBX_CUSTOM = """\
; extensions_custom.conf: the site's own dialplan, never rewritten by FreePBX.
[from-internal-custom]
; Internal calls and transfers (FreePBX's from-internal-xfer includes this context before ext-local).
exten => _20XX,1,GotoIf(${DIALPLAN_EXISTS(followme,${EXTEN},1)}?followme,${EXTEN},1:from-did-direct,${EXTEN},1)

[ext-local-custom]
; No use: ext-local's own `exten => 2001` is found before any context ext-local includes.
exten => _20XX,1,GotoIf(${DIALPLAN_EXISTS(followme,${EXTEN},1)}?followme,${EXTEN},1)
"""
MANAGED_LINE = '#tryinclude "extensions_followme.conf"\n'


def cat(host, path: str) -> str | None:
    done = ssh(host, f"cat {shlex.quote(path)}", check=False)
    return done.stdout if done.returncode == 0 else None


@pytest.fixture
def freepbx_shaped(lab_host):
    """The lab host as a FreePBX-shaped site for the test; put back as it was afterwards."""
    saved = cat(lab_host, "/etc/asterisk/extensions.conf")
    _write(lab_host, "/etc/asterisk/extensions.conf", FREEPBX_EXTENSIONS)
    _write(lab_host, "/etc/asterisk/extensions_custom.conf", FREEPBX_CUSTOM)
    asterisk_rx(lab_host, "dialplan reload")
    try:
        yield lab_host
    finally:
        _write(lab_host, "/etc/asterisk/extensions.conf", saved)
        ssh(lab_host, "rm -f /etc/asterisk/extensions_custom.conf")
        asterisk_rx(lab_host, "dialplan reload")
        run = run_playbook("site.yml", CALLS_INVENTORY, limit=lab_host.name)
        assert run.ok, run.output


def deploy_include_file(host, include_file: str):
    return run_playbook("site.yml", CALLS_INVENTORY, limit=host.name,
                        extra_vars={"followme_include_file": include_file})


def test_include_file_on_a_freepbx_shaped_site(freepbx_shaped):
    """followme_include_file: extensions_custom.conf puts the managed line there and leaves FreePBX's
    extensions.conf byte for byte; a second run changes nothing. (Needs the module's include_file
    option.)"""
    host = freepbx_shaped
    run = deploy_include_file(host, "extensions_custom.conf")
    assert run.ok and run.recap[host.name]["changed"] == 1, run.output
    assert cat(host, "/etc/asterisk/extensions.conf") == FREEPBX_EXTENSIONS
    assert cat(host, "/etc/asterisk/extensions_custom.conf") == FREEPBX_CUSTOM + MANAGED_LINE
    again = deploy_include_file(host, "extensions_custom.conf")
    assert again.ok and again.recap[host.name]["changed"] == 0, again.output

    # Internal call: the hook in from-internal-custom is found before ext-local's own 2001.
    check_rings(place_call(host, "2001"), FOLLOWME_2001)
    # An extension without a declaration falls through to FreePBX's handling (ext-local: 2006 alone).
    check_rings(place_call(host, "2006"), [("2006", 0, 4)])
    # Inbound route to the Custom Destination from-internal,2001,1: follow-me.
    check_rings(place_call(host, "02155512011", trunk_caller=OUTSIDE), FOLLOWME_2001)
    # Inbound route to "Extension 2001" (from-did-direct): FreePBX's ext-local only, 2001 alone for
    # 4 s: neither hook is reached (ext-local-custom loses to ext-local's own 2001).
    result = place_call(host, "02155512001", trunk_caller=OUTSIDE)
    check_rings(result, [("2001", 0, 4)])
    assert result.destination and result.destination["app"] == "VoiceMail", result.format()


@pytest.mark.parametrize("bad", ["../extensions.conf", "extensions_followme.conf", "custom.conf\n#exec x",
                                 "extensions_custom"])
def test_a_bad_include_file_is_refused_and_nothing_changes(lab_host, bad):
    """Only a plain *.conf file name of followme_config_dir, other than the managed file itself: refused on the
    controller with the other role variables (the module refuses it too: tests/unit/test_module.py)."""
    before = {name: cat(lab_host, f"/etc/asterisk/{name}") for name in ("extensions.conf", "extensions_followme.conf")}
    run = deploy_include_file(lab_host, bad)
    assert not run.ok and run.recap.get(lab_host.name, {}).get("failed") == 1, run.output
    assert f"{lab_host.name}: followme_include_file = " in run.output, run.output
    assert "nothing is changed on any host" in run.output, run.output
    assert {name: cat(lab_host, f"/etc/asterisk/{name}") for name in before} == before
