"""Issue 9 features proven by real SIP calls through a real Asterisk (README "Busy forwards", ...).

Declarations: tests/inventories/calls (P = 2 s pre-ring, T = 3 s ring time unless said otherwise).
Timelines are compared within 1 s with test_strategies.check_timeline: every device's INVITEs and
CANCELs; a device the timeline does not ring must get no INVITE at all.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plan
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import Checker, load_schema
from deploy import CALLS_INVENTORY, run_playbook
from labcall import CARRIER, answer, answer_and_press, asterisk_rx, busy, occupy, place_call, ssh
from test_strategies import check_timeline, hung_up, reached_voicemail

from lab.host import baseline_files

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("call_declarations")]


# -- busy forwards: every strategy without -prim reaches the list when the extension is busy -------
# (extension, {agent: rings when E's device is in a call}, {agent: rings when E's device answers 486})
BUSY_FORWARDS = {
    "ringall": ("2001", {"2001": [(0, 2)], "2002": [(2, 5)], "2003": [(2, 5)], CARRIER: [(2, 5)]},
                {"2001": [(0, None)], "2002": [(0, 3)], "2003": [(0, 3)], CARRIER: [(0, 3)]}),
    "hunt": ("2003", {"2003": [(0, 2)], "2004": [(2, 5)], "2005": [(5, 8)]},
             {"2003": [(0, None)], "2004": [(0, 3)], "2005": [(3, 6)]}),
    "memoryhunt": ("2005", {"2005": [(0, 2)], "2006": [(2, 11)], "2007": [(5, 11)], "2008": [(8, 11)]},
                   {"2005": [(0, None)], "2006": [(0, 9)], "2007": [(3, 9)], "2008": [(6, 9)]}),
    "firstavailable": ("2007", {"2007": [(0, 2)], "2008": [(2, 5)]}, {"2007": [(0, None)], "2008": [(0, 3)]}),
    "firstnotonphone": ("2008", {"2008": [(0, 2)], "2009": [(2, 5)]}, {"2008": [(0, None)], "2009": [(0, 3)]}),
    "ringallv2": ("2009", {"2009": [(0, 5)], "2010": [(2, 5)], CARRIER: [(2, 5)]},
                  {"2009": [(0, None)], "2010": [(2, 5)], CARRIER: [(2, 5)]}),
}


def _reached_the_list(result, extension):
    if extension == "2003":  # hunt: no_answer goto lab-dest 701
        assert result.destination and result.destination["exten"] == "701", result.format()
    else:
        reached_voicemail(result, extension)


@pytest.mark.parametrize("strategy", list(BUSY_FORWARDS))
def test_extension_in_a_call_forwards_to_the_list(lab_host, strategy):
    extension, rings, _ = BUSY_FORWARDS[strategy]
    with occupy(lab_host, extension) as in_a_call:
        result = place_call(lab_host, extension, {extension: in_a_call})
    check_timeline(result, rings)  # its own ring is call waiting; the list rings as when idle
    _reached_the_list(result, extension)


@pytest.mark.parametrize("strategy", list(BUSY_FORWARDS))
def test_extension_answering_busy_forwards_to_the_list(lab_host, strategy):
    extension, _, rings = BUSY_FORWARDS[strategy]
    result = place_call(lab_host, extension, {extension: busy()})
    check_timeline(result, rings)  # a 486 ends the pre-ring at once; in ringallv2 the list joins at P
    _reached_the_list(result, extension)


def test_default_strategy_is_ringallv2(lab_host):
    """2013 declares no strategy: E (no device) from t = 0, the list joins at P = 2 for T = 3 s."""
    result = place_call(lab_host, "2013")
    check_timeline(result, {"2006": [(2, 5)], "2007": [(2, 5)]})
    reached_voicemail(result, "2013")


# -- per-extension prompts (2014: as 2011, with confirm_prompt followme/call-from, too_late_prompt followme/status) --
LOG = "/var/log/asterisk/messages"


def _log_lines(host) -> int:
    return int(ssh(host, f"wc -l < {LOG}").stdout)


def _played_since(host, lines: int) -> list[str]:
    """Sound files Asterisk played on the external leg (Local/909121234567@from-internal) since `lines`."""
    new = ssh(host, f"tail -n +{lines + 1} {LOG}").stdout
    return re.findall(r"<Local/909121234567@from-internal-[^>]*> Playing '([^']+)'", new)


def test_declared_confirm_prompt_is_what_the_external_leg_hears(lab_host):
    lines = _log_lines(lab_host)
    result = place_call(lab_host, "2014", carrier=answer_and_press("1", after=1, press_after=1))
    assert result.caller_status == 200 and result.answered_by == CARRIER, result.format()
    played = _played_since(lab_host, lines)
    assert played and played[0].startswith("followme/call-from."), played
    assert not any(p.startswith("followme/options.") for p in played), played


def test_site_confirm_prompt_when_none_is_declared(lab_host):
    lines = _log_lines(lab_host)
    result = place_call(lab_host, "2011", carrier=answer_and_press("1", after=1, press_after=1))
    assert result.caller_status == 200, result.format()
    played = _played_since(lab_host, lines)
    assert played and played[0].startswith("followme/options."), played


def test_declared_too_late_prompt_is_what_a_late_leg_hears(lab_host):
    lines = _log_lines(lab_host)
    result = place_call(lab_host, "2014", {"2003": answer(after=1)},
                        carrier=answer_and_press("1", after=0.5, press_after=2), hold=6)
    # The caller is connected when 2003 answers (the carrier is still in its prompt then).
    assert abs(result.answer_time - result.times("2003", "200", direction="out")[0]) < 0.2, result.format()
    pressed = result.infos(CARRIER)[0]
    assert pressed > result.answer_time, result.format()
    played = _played_since(lab_host, lines)
    assert [p.split(".")[0] for p in played] == ["followme/call-from", "followme/status"], played


# -- caller ID on external legs (2020..2024: the carrier alone, 2 s) ---------------------------------

MANAGED_INCLUDE = '#tryinclude "extensions_followme.conf"'


def _put(host, path: str, text: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    ssh(host, f"echo {encoded} | base64 -d > {path}.labtmp && cat {path}.labtmp > {path} && rm {path}.labtmp")


def _baseline_in_place(host) -> bool:
    route, endpoint, internal = asterisk_rx(host, "dialplan show 55502024@from-carrier", "pjsip show endpoint pstn",
                                            "dialplan show from-internal")
    return "FROM_DID" in route and "0215550123" in endpoint and "Include =>        'followme-toggle'" in internal


@pytest.fixture(scope="module")
def did_route(call_declarations):
    """The lab's inbound DID route, trunk endpoint `pstn` and `include => followme-toggle` (lab/asterisk), also
    on a host created before they were added: its extensions.conf (keeping the role's managed #tryinclude
    line) and pjsip.conf are brought to the lab's baseline and reloaded."""
    host = call_declarations
    if _baseline_in_place(host):
        return host
    files = baseline_files(host)
    current = ssh(host, "cat /etc/asterisk/extensions.conf").stdout
    extensions = files["extensions.conf"]
    if MANAGED_INCLUDE in current:
        extensions = extensions.rstrip("\n") + "\n" + MANAGED_INCLUDE + "\n"
    _put(host, "/etc/asterisk/extensions.conf", extensions)
    _put(host, "/etc/asterisk/pjsip.conf", files["pjsip.conf"])
    asterisk_rx(host, "dialplan reload", "module reload res_pjsip.so")
    assert _baseline_in_place(host)
    return host


def _from_user(event) -> str:
    match = re.search(r"<sip:([^@;>]+)@", event.headers.get("From", ""))
    return match.group(1) if match else ""


def _pai_user(event) -> str:
    match = re.search(r"<sip:([^@;>]+)@", event.headers.get("P-Asserted-Identity", ""))
    return match.group(1) if match else ""


# extension: (mode, what the carrier sees for an internal caller, for a caller from outside on DID 5550<ext>)
CALLER_ID = {
    "2020": ("fixed", "+982155501111", "+982155501111"),
    "2021": ("outside_fixed", "caller", "02155502222"),
    "2022": ("dialed", "caller", "55502022"),
    "2023": ("force_dialed", "02155503333", "55502023"),
    "2024": ("default", "caller", "0215550123"),
}


@pytest.mark.parametrize("extension", list(CALLER_ID), ids=[mode for mode, _, _ in CALLER_ID.values()])
@pytest.mark.parametrize("origin", ["internal", "outside"])
def test_caller_id_on_external_legs(did_route, extension, origin):
    mode, internal, outside = CALLER_ID[extension]
    if origin == "internal":
        result = place_call(did_route, extension)
    else:
        result = place_call(did_route, f"5550{extension}", caller_user="pstn")
    expected = internal if origin == "internal" else outside
    check_timeline(result, {CARRIER: [(0, 2)]})
    (invite,) = result.invite_events(CARRIER)
    assert _from_user(invite) == expected, result.format()
    assert _pai_user(invite) == expected, invite.headers.get("P-Asserted-Identity")


# -- per-entry timing {number, delay, ring_time} (2025..2029: no device of their own, hangup) --------

TIMED = {
    "2025": {"2006": [(2, 5)], "2007": [(0, 6)], CARRIER: [(1, 6)]},   # ringall T=6
    "2026": {"2006": [(0, 3)], "2007": [(4, 6)], "2008": [(6, 9)]},    # hunt T=3: 2007's turn is 1 + 2 s
    "2027": {"2008": [(3, 5)], "2009": [(2, 6)]},                      # ringallv2 P=2 T=4: joins at P + delay
    "2028": {"2006": [(0, 6)], "2007": [(2, 3)], "2008": [(5, 6)]},    # memoryhunt T=2
    "2029": {"2009": [(1, 3)]},                                         # firstavailable: its own turn
}


def _call_plan(extension):
    """The plan of the call inventory's declaration, as validate -v shows it."""
    inventory = yaml.safe_load((ROOT / "tests/inventories/calls/group_vars/pbx/followme.yml").read_text())
    checker = Checker(load_schema(str(ROOT / "schemas/followme.schema.json")))
    declarations, errors = checker.check_host("pbx", inventory)
    assert not errors, errors
    return build_plan(extension, declarations[extension])


@pytest.mark.parametrize("extension", list(TIMED))
def test_entry_with_its_own_delay_and_ring_time(call_declarations, extension):
    expected = TIMED[extension]
    rings, end = _call_plan(extension).timeline()
    plan = {}
    for ring in rings:
        if ring.entry.startswith("909"):
            plan.setdefault(CARRIER, []).append((ring.start, ring.end))
        elif ring.entry != extension:
            plan.setdefault(ring.entry, []).append((ring.start, ring.end))
    assert plan == expected  # the call plan says what the PBX does
    result = place_call(call_declarations, extension)
    check_timeline(result, expected)
    hung_up(result, end)


# -- schedules, built around the PBX's current time ---------------------------------------------------
# Declarations of device extensions, deployed for these tests only (followme_host over the call
# inventory; put back afterwards): E's device answers 486, so the site's normal handling (priority 2
# of from-internal: Dial(PJSIP/E), then VoiceMail) shows as E's INVITE and its voicemail; active
# follow-me (P = 0) rings only the list, 2 s, then hangs up.

def _span(start: datetime, hours_from: int, hours_to: int) -> str:
    return f"{start + timedelta(hours=hours_from):%H:%M}-{start + timedelta(hours=hours_to):%H:%M}"


@pytest.fixture(scope="class")
def scheduled(call_declarations):
    host = call_declarations
    now = datetime.strptime(ssh(host, "date +%Y-%m-%dT%H:%M").stdout.strip(), "%Y-%m-%dT%H:%M")
    tehran = datetime.now(ZoneInfo("Asia/Tehran")).replace(tzinfo=None)
    other_day = f"{now + timedelta(days=3):%a}".lower()

    def declaration(entry, schedule):
        return {"list": [entry], "strategy": "ringall", "initial_ring_time": 0, "ring_time": 2,
                "no_answer": "hangup", "schedule": schedule}

    schedules = {  # extension: (declaration, active now?)
        "2001": (declaration("2002", {"ranges": [{"times": _span(now, -1, 1)}]}), True),
        "2003": (declaration("2004", {"ranges": [{"times": _span(now, 2, 3)}]}), False),
        "2005": (declaration("2006", {"active": "outside", "ranges": [{"times": _span(now, -1, 1)}]}), False),
        "2007": (declaration("2008", {"active": "outside", "ranges": [{"weekdays": other_day}]}), True),
        "2009": (declaration("2010", {"timezone": "Asia/Tehran",
                                      "ranges": [{"times": _span(tehran, -1, 1),
                                                  "weekdays": f"{tehran:%a}".lower()}]}), True),
        "2002": (declaration("2004", {"timezone": "Asia/Tehran", "ranges": [{"times": _span(now, -1, 1)}]}), False),
    }
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name,
                       extra_vars={"followme_host": {ext: decl for ext, (decl, _) in schedules.items()}})
    assert run.ok, run.output
    yield host, schedules
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name)
    assert run.ok, run.output


class TestSchedules:
    """One deploy of the scheduled declarations for the class (class scope: put back before the next tests)."""

    @pytest.mark.parametrize("extension", ["2001", "2003", "2005", "2007", "2009", "2002"])
    def test_schedule_decides_whether_follow_me_is_active(self, scheduled, extension):
        host, schedules = scheduled
        declaration, active = schedules[extension]
        result = place_call(host, extension, {extension: busy()})
        entry = declaration["list"][0]
        if active:  # the list rings, E's device does not (P = 0)
            check_timeline(result, {entry: [(0, 2)]})
            hung_up(result, 2)
        else:  # the site's normal handling: E's device (486), then its voicemail; the list never rings
            check_timeline(result, {extension: [(0, None)]})
            reached_voicemail(result, extension)
            assert result.destination["context"] == "from-internal", result.format()


# -- the users' own switch (*21) ----------------------------------------------------------------------

def _switch_state(host, extension) -> tuple[str, str]:
    """(AstDB FOLLOWME/<ext> or "-", DEVICE_STATE(Custom:FOLLOWME<ext>)) as Asterisk itself reports them."""
    db = asterisk_rx(host, f"database get FOLLOWME {extension}")
    match = re.search(r"^Value: (\S+)", db, re.M)
    lamp = asterisk_rx(host, f"dialplan eval function DEVICE_STATE(Custom:FOLLOWME{extension})")
    state = re.search(r"^Result:\s*(\S*)", lamp, re.M)
    return (match.group(1) if match else "-"), (state.group(1) if state else lamp)


def _lamp(host, extension, expected: str | None = None, timeout: float = 3.0) -> str:
    """The state of the hint *21<extension> (what a phone's BLF key subscribed to it shows), from Asterisk.

    Asterisk updates a hint from its device state asynchronously (a task processor): with `expected`, the
    state is read again until it is that, for at most `timeout` s, and the last reading is returned."""
    deadline = time.monotonic() + timeout
    while True:
        out = asterisk_rx(host, f"dialplan eval function EXTENSION_STATE(*21{extension}@followme-toggle)")
        match = re.search(r"^Result:\s*(\S*)", out, re.M)
        state = match.group(1) if match else out
        if expected is None or state == expected or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _dial_switch(host, extension):
    """The device of `extension` dials *21 (a SIPp caller identified as that endpoint)."""
    result = place_call(host, "*21", caller_user=extension, hold=3)
    assert result.caller_status == 200, result.format()
    return result


def _forget(host, *extensions):
    for extension in extensions:
        asterisk_rx(host, f"database del FOLLOWME {extension}", f"devstate change Custom:FOLLOWME{extension} UNKNOWN")


def _site_handling(result, extension):
    """Follow-me was skipped: only E's device was rung (it answers 486), then its voicemail from the site."""
    check_timeline(result, {extension: [(0, None)]})
    reached_voicemail(result, extension)
    assert result.destination["context"] == "from-internal", result.format()


@pytest.fixture
def switch(did_route):
    _forget(did_route, "2001", "2006")
    yield did_route
    _forget(did_route, "2001", "2006")
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=did_route.name)
    assert run.ok, run.output


def test_users_switch_survives_a_deploy_and_the_next_call_follows_it(switch):
    host = switch
    assert _switch_state(host, "2001")[0] == "-"
    followed = {"2001": [(0, None)], "2002": [(0, 3)], "2003": [(0, 3)], CARRIER: [(0, 3)]}
    check_timeline(place_call(host, "2001", {"2001": busy()}), followed)  # declared enabled: follow-me

    _dial_switch(host, "2001")
    assert _switch_state(host, "2001") == ("off", "NOT_INUSE")
    _site_handling(place_call(host, "2001", {"2001": busy()}), "2001")
    assert _lamp(host, "2001", "NOT_INUSE") == "NOT_INUSE"  # what a BLF key on *212001 shows: off

    # A deploy that changes the dialplan (2006 declared, disabled) reloads it and leaves the switch alone.
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name, extra_vars={"followme_host": {"2006": {
        "list": ["2007"], "strategy": "ringall", "initial_ring_time": 0, "ring_time": 2, "no_answer": "hangup",
        "enabled": False}}})
    assert run.ok and run.recap[host.name]["changed"] >= 1, run.output
    assert _switch_state(host, "2001") == ("off", "NOT_INUSE")
    _site_handling(place_call(host, "2001", {"2001": busy()}), "2001")

    _dial_switch(host, "2001")
    assert _switch_state(host, "2001") == ("on", "INUSE")
    assert _lamp(host, "2001", "INUSE") == "INUSE"
    assert "Custom:FOLLOWME2001" in asterisk_rx(host, "core show hint *212001")  # the hint made for the lamp
    check_timeline(place_call(host, "2001", {"2001": busy()}), followed)

    # enabled: false is the default state: the site's handling until its user switches it on.
    assert "[disabled]" in asterisk_rx(host, "dialplan show 2006@followme")  # in the dialplan, labelled
    _site_handling(place_call(host, "2006", {"2006": busy()}), "2006")
    _dial_switch(host, "2006")
    assert _switch_state(host, "2006") == ("on", "INUSE")
    result = place_call(host, "2006", {"2006": busy()})
    check_timeline(result, {"2007": [(0, 2)]})
    hung_up(result, 2)


@pytest.mark.parametrize(("matcher", "extension"), [("false", "2002"), ("true", "2005")])
def test_the_lamp_follows_the_switch_with_either_pattern_matcher(did_route, matcher, extension):
    """The lamp's hint pattern resolves to the hint Asterisk makes from it with the default matcher and with the
    trie (extenpatternmatchnew, as a site with thousands of follow-me extensions may set it): each extension is
    looked at for the first time under that matcher."""
    host = did_route
    _forget(host, extension)
    asterisk_rx(host, f"dialplan set extenpatternmatchnew {matcher}")
    try:
        for state in ("INUSE", "NOT_INUSE", "INUSE"):
            asterisk_rx(host, f"devstate change Custom:FOLLOWME{extension} {state}")
            assert _lamp(host, extension, state) == state, (matcher, state)
        assert f"Custom:FOLLOWME{extension}" in asterisk_rx(host, f"core show hint *21{extension}")
        # the hint Asterisk made is in followme-toggle now, registered by pbx_config: not drift
        assert f"'*21{extension}'" in asterisk_rx(host, "dialplan show followme-toggle")
        rerun = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name)
        assert rerun.ok and rerun.recap[host.name]["changed"] == 0, rerun.output
    finally:
        asterisk_rx(host, "dialplan set extenpatternmatchnew false")
        _forget(host, extension)


def test_switch_from_a_device_without_follow_me_changes_nothing(did_route):
    before = asterisk_rx(did_route, "database show FOLLOWME")
    result = place_call(did_route, "*21", hold=3)  # the lab's caller endpoint: no follow-me of its own
    assert result.caller_status == 200, result.format()
    assert asterisk_rx(did_route, "database show FOLLOWME") == before


def test_check_reports_a_users_switch_and_a_reset_run_puts_it_back(switch):
    host = switch
    _dial_switch(host, "2001")
    assert _switch_state(host, "2001") == ("off", "NOT_INUSE")

    check = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name, check=True)
    assert check.ok and check.recap[host.name]["changed"] == 0, check.output
    assert "extension 2001: its user switched follow-me off (declared on)" in check.output, check.output
    assert _switch_state(host, "2001") == ("off", "NOT_INUSE")  # --check changes nothing

    reset = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name, extra_vars={"followme_toggle_reset": True})
    assert reset.ok and reset.recap[host.name]["changed"] == 1, reset.output
    assert _switch_state(host, "2001") == ("-", "INUSE")  # the declared state, lamp included
    check_timeline(place_call(host, "2001", {"2001": busy()}),
                   {"2001": [(0, None)], "2002": [(0, 3)], "2003": [(0, 3)], CARRIER: [(0, 3)]})
    again = run_playbook("site.yml", CALLS_INVENTORY, limit=host.name, extra_vars={"followme_toggle_reset": True})
    assert again.ok and again.recap[host.name]["changed"] == 0, again.output
