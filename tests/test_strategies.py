"""Every ring strategy proven by real SIP calls through a real Asterisk (SPEC "Ring strategies").

Declarations: tests/inventories/calls (P = 2 s pre-ring, T = 3 s ring time unless said otherwise).
Each test calls one extension on this worker's lab host and compares every device's INVITE and
CANCEL times with the SPEC timeline, within 1 s; a device the timeline does not ring must get no
INVITE at all. Agents not named in a test ring without answering.
"""

from __future__ import annotations

import re

import pytest
from labcall import CARRIER, EXTENSIONS, answer, answer_and_press, answer_silent, occupy, place_call, ssh, unreachable

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("call_declarations")]

TOLERANCE = 1.0
AGENTS = [*EXTENSIONS, CARRIER]


def check_timeline(result, rings: dict[str, list[tuple[float, float | None]]]) -> None:
    """rings: agent -> [(INVITE at, CANCEL at or None when that leg answered or was hung up otherwise)]."""
    timeline = result.format()
    for agent in AGENTS:
        expected = rings.get(agent, [])
        invites = [t for t in result.invites(agent) if t >= 0]
        assert len(invites) == len(expected), f"{agent}: INVITEs at {invites}, expected {expected}\n{timeline}"
        for seen, (start, _) in zip(invites, expected, strict=True):
            assert abs(seen - start) <= TOLERANCE, f"{agent}: INVITE at {seen:.2f}, expected {start}\n{timeline}"
        cancels = [t for t in result.cancels(agent) if t >= 0]
        ends = [end for _, end in expected if end is not None]
        assert len(cancels) == len(ends), f"{agent}: CANCELs at {cancels}, expected {ends}\n{timeline}"
        for seen, end in zip(cancels, ends, strict=True):
            assert abs(seen - end) <= TOLERANCE, f"{agent}: CANCEL at {seen:.2f}, expected {end}\n{timeline}"


def reached_voicemail(result, mailbox: str) -> None:
    assert result.answered_by is None, result.format()
    assert result.destination and result.destination["app"] == "VoiceMail", result.format()
    assert result.destination["data"].startswith(f"{mailbox}@default"), result.format()


def hung_up(result, at: float) -> None:
    assert result.answered_by is None and (result.caller_status or 0) >= 400, result.format()
    assert abs(result.duration - at) <= TOLERANCE, result.format()


# -- the ten strategies, nobody answering ---------------------------------------------------------

def test_ringall(lab_host):
    result = place_call(lab_host, "2001")
    check_timeline(result, {"2001": [(0, 2)], "2002": [(2, 5)], "2003": [(2, 5)], CARRIER: [(2, 5)]})
    reached_voicemail(result, "2001")
    # The external entry 909121234567# reaches the carrier as 09121234567 (the outbound route strips the 9).
    (carrier_invite,) = result.invite_events(CARRIER)
    assert carrier_invite.user == "09121234567", result.format()
    # CID name prefix on every leg (the caller is "Alice"); Alert-Info on internal legs only.
    for agent in ("2001", "2002", "2003", CARRIER):
        assert all(e.from_name == "FM Alice" for e in result.invite_events(agent)), result.format()
    for agent in ("2002", "2003"):
        assert result.invite_events(agent)[0].headers.get("Alert-Info") == "<http://localhost>;info=alert-internal"
    assert not carrier_invite.headers.get("Alert-Info")


def test_ringall_prim(lab_host):
    result = place_call(lab_host, "2002")
    check_timeline(result, {"2002": [(0, 2), (2, 5)], "2003": [(2, 5)]})
    hung_up(result, 5)


def test_hunt(lab_host):
    result = place_call(lab_host, "2003")
    check_timeline(result, {"2003": [(0, 2)], "2004": [(2, 5)], "2005": [(5, 8)]})
    assert result.destination and result.destination["context"] == "lab-dest", result.format()
    assert result.destination["exten"] == "701", result.format()


def test_hunt_prim(lab_host):
    # Nobody answers the list: no_answer {extension: 2010} is 2010's normal handling, which rings it.
    result = place_call(lab_host, "2004", {"2010": answer(after=1)})
    check_timeline(result, {"2004": [(0, 2)], "2005": [(2, 5)], "2006": [(5, 8)], "2010": [(8, None)]})
    assert result.answered_by == "2010", result.format()
    # 2010's normal handling includes its own follow-me, which puts its own prefix on the caller's name
    # (restored after 2004's list): one prefix, not two.
    assert result.invite_events("2010")[0].from_name == "FM Alice", result.format()


def test_memoryhunt(lab_host):
    result = place_call(lab_host, "2005")
    # One INVITE per device: entries already ringing ring on into the next step (no missed-call noise).
    check_timeline(result, {"2005": [(0, 2)], "2006": [(2, 11)], "2007": [(5, 11)], "2008": [(8, 11)]})
    reached_voicemail(result, "2005")


def test_memoryhunt_prim_without_pre_ring(lab_host):
    # initial_ring_time 0: the extension itself is not rung at all.
    result = place_call(lab_host, "2016")
    check_timeline(result, {"2007": [(0, 6)], "2008": [(3, 6)]})
    hung_up(result, 6)


def test_firstavailable_skips_an_unreachable_device(lab_host):
    result = place_call(lab_host, "2007", {"2008": unreachable()})
    check_timeline(result, {"2007": [(0, 2)], "2009": [(2, 5)]})
    reached_voicemail(result, "2007")


def test_firstnotonphone_skips_a_device_in_a_call(lab_host):
    with occupy(lab_host, "2009") as in_a_call:
        result = place_call(lab_host, "2008", {"2009": in_a_call})
    check_timeline(result, {"2008": [(0, 2)], "2010": [(2, 5)]})
    reached_voicemail(result, "2008")


def test_ringallv2(lab_host):
    result = place_call(lab_host, "2009")
    check_timeline(result, {"2009": [(0, 5)], "2010": [(2, 5)], CARRIER: [(2, 5)]})
    reached_voicemail(result, "2009")


def test_ringallv2_prim(lab_host):
    result = place_call(lab_host, "2010")
    check_timeline(result, {"2010": [(0, 5)], "2001": [(2, 5)], "2002": [(2, 5)]})
    hung_up(result, 5)


# -- first answer wins ----------------------------------------------------------------------------

def test_first_answer_cancels_the_other_legs_at_once(lab_host):
    result = place_call(lab_host, "2009", {"2010": answer(after=1)})
    assert result.answered_by == "2010", result.format()
    check_timeline(result, {"2009": [(0, 3)], "2010": [(2, None)], CARRIER: [(2, 3)]})
    answered = result.times("2010", "200", direction="out")[0]
    for agent in ("2009", CARRIER):
        assert 0 <= result.cancels(agent)[0] - answered < 0.5, result.format()


def test_hunt_stops_at_the_leg_that_answers(lab_host):
    result = place_call(lab_host, "2003", {"2004": answer(after=1)})
    assert result.answered_by == "2004", result.format()
    check_timeline(result, {"2003": [(0, 2)], "2004": [(2, None)]})


# -- -prim: a busy primary rings nobody in the list ----------------------------------------------

def test_ringall_prim_with_busy_primary_rings_nobody_else(lab_host):
    with occupy(lab_host, "2002") as in_a_call:
        result = place_call(lab_host, "2002", {"2002": in_a_call})
    check_timeline(result, {"2002": [(0, 2)]})  # its own ring (call waiting), then no list
    hung_up(result, 2)


def test_hunt_prim_with_busy_primary_rings_nobody_in_the_list(lab_host):
    with occupy(lab_host, "2005") as in_a_call:
        result = place_call(lab_host, "2004", {"2005": in_a_call, "2010": answer(after=1)})
    check_timeline(result, {"2004": [(0, 2)], "2010": [(2, None)]})
    assert result.answered_by == "2010", result.format()


def test_memoryhunt_prim_with_busy_primary_goes_straight_to_no_answer(lab_host):
    with occupy(lab_host, "2007") as in_a_call:
        result = place_call(lab_host, "2016", {"2007": in_a_call})
    check_timeline(result, {})
    hung_up(result, 0)


def test_ringallv2_prim_with_busy_extension_rings_only_the_extension(lab_host):
    with occupy(lab_host, "2010") as in_a_call:
        result = place_call(lab_host, "2010", {"2010": in_a_call})
    check_timeline(result, {"2010": [(0, 5)]})
    hung_up(result, 5)


def test_unavailable_primary_does_not_block_the_list(lab_host):
    # An unreachable device fails at once, so the hunt moves on to 2006 without waiting its 3 s.
    result = place_call(lab_host, "2004", {"2005": unreachable(), "2010": answer(after=1)})
    check_timeline(result, {"2004": [(0, 2)], "2006": [(2, 5)], "2010": [(5, None)]})


# -- confirm calls (2011: ringall, no pre-ring, 8 s, list 2003 + 909121234567#, 2 s to press) -----

def test_confirm_external_leg_that_presses_1_is_bridged(lab_host):
    result = place_call(lab_host, "2011", carrier=answer_and_press("1", after=1, press_after=1))
    assert result.caller_status == 200, result.format()
    pressed = result.infos(CARRIER)[0]
    assert abs(result.answer_time - pressed) <= TOLERANCE, result.format()
    check_timeline(result, {"2003": [(0, pressed)], CARRIER: [(0, None)]})
    assert not [t for t in result.byes(CARRIER) if t < result.answer_time], result.format()


@pytest.mark.parametrize("behaviour", [answer_and_press("2", after=1, press_after=1), answer_silent(after=1)],
                         ids=["presses-2", "silent"])
def test_confirm_external_leg_that_declines_is_dropped_while_the_others_go_on(lab_host, behaviour):
    result = place_call(lab_host, "2011", carrier=behaviour)
    dropped = result.byes(CARRIER)
    assert dropped and 1 < dropped[0] < 8 - TOLERANCE, result.format()  # that leg only, before the step ends
    check_timeline(result, {"2003": [(0, 8)], CARRIER: [(0, None)]})  # 2003 keeps ringing its 8 s
    hung_up(result, 8)


def test_confirm_internal_leg_connects_on_answer(lab_host):
    result = place_call(lab_host, "2011", {"2003": answer(after=1)})
    assert result.answered_by == "2003" and abs(result.answer_time - 1) <= TOLERANCE, result.format()
    check_timeline(result, {"2003": [(0, None)], CARRIER: [(0, 1)]})


def test_confirm_leg_accepting_after_the_call_was_taken_hears_the_too_late_prompt(lab_host):
    """2003 takes the call at 1 s; the carrier answered at 0.5 s and presses 1 at 2.5 s: too late."""
    log = "/var/log/asterisk/messages"
    played = f"grep -c 'Playback(\"Local/909121234567@from-internal-[^\"]*\", \"followme/sorry\")' {log} || true"
    before = int(ssh(lab_host, played).stdout.strip() or 0)
    result = place_call(lab_host, "2011", {"2003": answer(after=1)},
                        carrier=answer_and_press("1", after=0.5, press_after=2), hold=6)
    # The caller is connected when 2003 answers (the carrier is still in its prompt then).
    assert abs(result.answer_time - result.times("2003", "200", direction="out")[0]) < 0.2, result.format()
    pressed, dropped = result.infos(CARRIER)[0], result.byes(CARRIER)[0]
    assert pressed > result.answer_time, result.format()
    assert dropped - pressed > 0.3, result.format()  # the prompt played before the leg was dropped
    assert int(ssh(lab_host, played).stdout.strip() or 0) == before + 1, "no too-late prompt in Asterisk's log"


def test_announcement_then_music_on_hold(lab_host):
    """2012: the caller is answered, hears the announcement, then the list rings with music on hold."""
    log = "/var/log/asterisk/messages"
    lines = int(ssh(lab_host, f"wc -l < {log}").stdout)
    result = place_call(lab_host, "2012", {"2004": answer(after=1)}, hold=8)
    assert result.caller_status == 200 and result.answer_time < 0.5, result.format()  # answered to play it
    rung = result.invites("2004")[0]
    assert rung > 1, result.format()  # the list rings after the announcement
    assert result.answers and result.answers[0].agent == "2004", result.format()
    new = ssh(lab_host, f"tail -n +{lines + 1} {log}").stdout
    assert 'Playback("PJSIP/caller-' in new and '"followme/pls-hold-while-try")' in new
    assert re.search(r'Dial\("PJSIP/caller-[^"]*", "Local/0i2004@followme-leg,3,m\(default\)U?', new), new[-3000:]
