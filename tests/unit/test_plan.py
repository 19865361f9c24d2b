"""The call plan of every strategy, as the timeline of a call nobody answers (SPEC "Ring strategies")."""

import pytest
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plan

LIST = ["2001", "2002", "909121234567#"]


def plan(strategy, initial_ring_time=7, ring_time=20, entries=LIST, **fields):
    declaration = {
        "list": entries, "strategy": strategy, "initial_ring_time": initial_ring_time, "ring_time": ring_time,
        "no_answer": {"voicemail": "2001"}, "enabled": True, "confirm_calls": False, "cid_name_prefix": None,
        "alert_info": None, "music_on_hold": None, "announcement": None, **fields,
    }
    return build_plan("2001", declaration)


def rings(p, **state):
    found, end = p.timeline(**state)
    return [(r.entry, r.start, r.end) for r in found], end


EXT = "909121234567#"


@pytest.mark.parametrize(("strategy", "expected"), [
    ("ringall", ([("2001", 0, 7), ("2001", 7, 27), ("2002", 7, 27), (EXT, 7, 27)], 27)),
    ("ringall-prim", ([("2001", 0, 7), ("2001", 7, 27), ("2002", 7, 27), (EXT, 7, 27)], 27)),
    ("hunt", ([("2001", 0, 7), ("2001", 7, 27), ("2002", 27, 47), (EXT, 47, 67)], 67)),
    ("hunt-prim", ([("2001", 0, 7), ("2001", 7, 27), ("2002", 27, 47), (EXT, 47, 67)], 67)),
    ("memoryhunt", ([("2001", 0, 7), ("2001", 7, 67), ("2002", 27, 67), (EXT, 47, 67)], 67)),
    ("firstavailable", ([("2001", 0, 7), ("2001", 7, 27)], 27)),
    ("firstnotonphone", ([("2001", 0, 7), ("2001", 7, 27)], 27)),
    ("ringallv2", ([("2001", 0, 27), ("2002", 7, 27), (EXT, 7, 27)], 27)),
    ("ringallv2-prim", ([("2001", 0, 27), ("2002", 7, 27), (EXT, 7, 27)], 27)),
])
def test_timeline_of_every_strategy(strategy, expected):
    assert rings(plan(strategy)) == expected


@pytest.mark.parametrize("strategy", ["ringall", "hunt", "memoryhunt", "firstavailable", "firstnotonphone"])
def test_initial_ring_time_zero_skips_the_extension(strategy):
    found, _ = rings(plan(strategy, initial_ring_time=0, entries=["2002", "2003"]))
    assert found[0][1] == 0 and all(entry != "2001" for entry, _, _ in found)


def test_ringallv2_with_zero_pre_ring_rings_everyone_from_the_start():
    assert rings(plan("ringallv2", initial_ring_time=0)) == ([("2001", 0, 20), ("2002", 0, 20), (EXT, 0, 20)], 20)


def test_ringallv2_does_not_ring_the_extension_twice():
    assert [leg.entry for leg in plan("ringallv2").steps[0].legs] == ["2001", "2002", EXT]


def test_first_available_skips_unavailable_devices_not_external_ones():
    p = plan("firstavailable", entries=["2002", "2003", EXT])
    assert rings(p, unavailable={"2002"})[0] == [("2001", 0, 7), ("2003", 7, 27)]
    assert rings(p, unavailable={"2002", "2003"})[0] == [("2001", 0, 7), (EXT, 7, 27)]


def test_first_not_on_phone_skips_busy_devices():
    p = plan("firstnotonphone", entries=["2002", "2003"])
    assert rings(p, busy={"2002"})[0] == [("2001", 0, 7), ("2003", 7, 27)]


@pytest.mark.parametrize("strategy", ["ringall-prim", "hunt-prim", "memoryhunt-prim"])
def test_busy_primary_rings_nobody_in_the_list(strategy):
    p = plan(strategy, entries=["2002", "2003"])
    assert p.primary == "2002"
    assert rings(p, busy={"2002"}) == ([("2001", 0, 7)], 7)
    # An unavailable primary does not block the list.
    assert len(rings(p, unavailable={"2002"})[0]) > 1


def test_busy_primary_of_ringallv2_prim_is_the_extension():
    p = plan("ringallv2-prim")
    assert p.primary == "2001"
    assert rings(p, busy={"2001"}) == ([("2001", 0, 27)], 27)


def test_plain_strategies_have_no_primary():
    assert all(plan(s).primary is None for s in ["ringall", "hunt", "memoryhunt", "ringallv2", "firstavailable"])


def test_external_primary_is_never_busy():
    assert plan("hunt-prim", entries=[EXT, "2002"]).primary is None


@pytest.mark.parametrize(("strategy", "initial", "text"), [
    ("ringall", 7, "2001: ring 2001 for 7 s; then ring 2001, 2002, 909121234567# together for 20 s; "
                   "then voicemail 2001"),
    ("hunt", 0, "2001: ring 2001, 2002, 909121234567# one at a time, 20 s each; then voicemail 2001"),
    ("memoryhunt", 0, "2001: ring 2001, then add 2002, 909121234567# one by one, 20 s each step, all ringing on "
                      "until 60 s; then voicemail 2001"),
    ("firstavailable", 0, "2001: ring the first available of 2001, 2002, 909121234567# for 20 s; "
                          "then voicemail 2001"),
    ("firstnotonphone", 0, "2001: ring the first idle of 2001, 2002, 909121234567# for 20 s; then voicemail 2001"),
    ("ringallv2", 7, "2001: ring 2001 for 27 s, joined after 7 s by 2002, 909121234567# for 20 s; "
                     "then voicemail 2001"),
    ("ringall-prim", 7, "2001: ring 2001 for 7 s; then ring 2001, 2002, 909121234567# together for 20 s; "
                        "then voicemail 2001 (if 2001 is busy, only 2001's own ring)"),
])
def test_plan_in_words(strategy, initial, text):
    assert plan(strategy, initial_ring_time=initial).describe() == text


def test_no_answer_destinations_in_words():
    assert plan("ringall", no_answer="hangup").no_answer.describe() == "hang up"
    assert plan("ringall", no_answer={"extension": "2005"}).no_answer.describe() == "extension 2005"
    goto = plan("ringall", no_answer={"goto": {"context": "ivr", "extension": "s"}}).no_answer
    assert (goto.kind, goto.target, goto.describe()) == ("goto", ("ivr", "s", "1"), "go to ivr,s,1")


def test_unavailable_devices_fail_at_once_in_a_hunt():
    p = plan("hunt-prim", entries=["2002", "2003", "2004"])
    assert rings(p, unavailable={"2002"}) == ([("2001", 0, 7), ("2003", 7, 27), ("2004", 27, 47)], 47)
    assert rings(plan("memoryhunt", entries=["2002", "2003"]), unavailable={"2002"}) == (
        [("2001", 0, 7), ("2003", 7, 27)], 27)


# -- issue 9: busy forwards, memoryhunt without missed-call noise ---------------------------------

def test_default_strategy_is_ringallv2(schema):
    assert schema["definitions"]["fields"]["properties"]["strategy"]["default"] == "ringallv2"


@pytest.mark.parametrize(("strategy", "expected"), [
    ("ringall", ([("2001", 0, 0), ("2002", 0, 20), (EXT, 0, 20)], 20)),
    ("hunt", ([("2001", 0, 0), ("2002", 0, 20), (EXT, 20, 40)], 40)),
    ("memoryhunt", ([("2001", 0, 0), ("2002", 0, 40), (EXT, 20, 40)], 40)),
    ("firstavailable", ([("2001", 0, 0), ("2002", 0, 20)], 20)),
    ("ringallv2", ([("2001", 0, 0), ("2002", 7, 27), (EXT, 7, 27)], 27)),
])
def test_extension_answering_busy_forwards_to_the_list_at_once(strategy, expected):
    assert rings(plan(strategy, entries=["2002", EXT]), refusing={"2001"}) == expected


def test_memoryhunt_rings_each_entry_once_and_skips_leading_unavailable_ones():
    p = plan("memoryhunt", initial_ring_time=0, entries=["2002", "2003", "2004"], ring_time=5)
    assert rings(p) == ([("2002", 0, 15), ("2003", 5, 15), ("2004", 10, 15)], 15)
    assert rings(p, unavailable={"2002"}) == ([("2003", 0, 10), ("2004", 5, 10)], 10)
    assert rings(p, unavailable={"2003"}) == ([("2002", 0, 15), ("2004", 10, 15)], 15)


def test_timed_entries_in_every_kind_of_step():
    timed = [{"number": "2002", "delay": 2, "ring_time": 3}, EXT]
    assert rings(plan("ringall", initial_ring_time=0, ring_time=6, entries=timed)) == (
        [("2002", 2, 5), (EXT, 0, 6)], 6)
    assert rings(plan("ringallv2", initial_ring_time=2, ring_time=4, entries=timed)) == (
        [("2001", 0, 6), ("2002", 4, 6), (EXT, 2, 6)], 6)  # 2002's 3 s end with the step
    assert rings(plan("hunt", initial_ring_time=0, ring_time=4, entries=timed)) == (
        [("2002", 2, 5), (EXT, 5, 9)], 9)
    assert rings(plan("memoryhunt", initial_ring_time=0, ring_time=4, entries=[EXT, timed[0]])) == (
        [(EXT, 0, 8), ("2002", 6, 8)], 8)
    assert rings(plan("firstavailable", initial_ring_time=0, entries=timed)) == ([("2002", 2, 5)], 5)


def test_ringallv2_timed_entry_joins_after_the_pre_ring_plus_its_delay():
    p = plan("ringallv2", initial_ring_time=2, ring_time=4, entries=[{"number": "2002", "delay": 1, "ring_time": 2}])
    assert rings(p) == ([("2001", 0, 6), ("2002", 3, 5)], 6)


def test_timed_entries_in_words():
    p = plan("ringall", initial_ring_time=0, ring_time=6, entries=[{"number": "2002", "delay": 2, "ring_time": 3}, EXT])
    assert p.describe() == "2001: ring together for 6 s: 2002 2-5 s, 909121234567# 0-6 s; then voicemail 2001"
    p = plan("hunt", initial_ring_time=0, ring_time=3, entries=["2002", {"number": "2003", "delay": 1, "ring_time": 2}])
    assert p.describe() == "2001: ring one at a time: 2002 for 3 s, 2003 after 1 s for 2 s; then voicemail 2001"
    p = plan("memoryhunt", initial_ring_time=0, ring_time=2, entries=["2002", {"number": "2003", "ring_time": 1}])
    assert p.describe() == ("2001: ring one by one, each joining 2 s after the one before, until 4 s: "
                            "2002 0-4 s, 2003 2-3 s; then voicemail 2001")
