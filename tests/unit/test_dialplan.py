"""The renderer: small per-extension dialplan, data-only lines, and its own guard on what it writes."""

import base64
import json
import re
from pathlib import Path

import pytest
from ansible_collections.followme.asterisk.plugins.module_utils.dialplan import (
    FREE_TEXT,
    Settings,
    counts,
    gosub_arguments,
    no_answer_application,
    render,
    revision_of,
)
from ansible_collections.followme.asterisk.plugins.module_utils.plan import (
    CallPlan,
    Leg,
    NoAnswer,
    Step,
    build_plan,
    build_plans,
)

SETTINGS = Settings(context="followme", device="PJSIP/{extension}", outbound_context="from-internal",
                    extension_context="from-internal", voicemail_context="default",
                    confirm_prompt="followme/options", too_late_prompt="followme/sorry", confirm_timeout=5)


def declaration(**fields):
    base = {"list": ["2001", "2002", "909121234567#"], "strategy": "ringallv2-prim", "initial_ring_time": 7,
            "ring_time": 20, "no_answer": {"voicemail": "2001"}, "enabled": True, "confirm_calls": False,
            "cid_name_prefix": None, "alert_info": None, "music_on_hold": None, "announcement": None}
    return {**base, **fields}


def test_plan_becomes_gosub_data():
    plan = build_plan("2001", declaration(cid_name_prefix="FM ", alert_info="<http://x>;info=alert-external"))
    assert gosub_arguments(plan) == ("2001,2001,0,Rk0g,PGh0dHA6Ly94PjtpbmZvPWFsZXJ0LWV4dGVybmFs,,,,,,,1,"
                                     "all:27:0e2001-7i2002-7x909121234567")
    hunt = build_plan("2002", declaration(strategy="hunt-prim", initial_ring_time=3, ring_time=4,
                                          list=["2003", "2004"], confirm_calls=True, music_on_hold="default",
                                          announcement="custom/hold"))
    assert gosub_arguments(hunt) == "2002,2003,1,,,default,custom/hold,,,,,1,pre:3:0e2002,each:4:0i2003-0i2004"
    off = build_plan("2003", declaration(enabled=False))
    assert gosub_arguments(off) == "2003,2003,0,,,,,,,,,0,all:27:0e2003-7i2001-7i2002-7x909121234567"


@pytest.mark.parametrize(("no_answer", "application"), [
    ("hangup", "Hangup()"),
    ({"voicemail": "2001"}, "VoiceMail(2001@default,u)"),
    ({"extension": "2002"}, "Goto(from-internal,2002,1)"),
    ({"goto": {"context": "ivr", "extension": "s", "priority": "start"}}, "Goto(ivr,s,start)"),
])
def test_no_answer_destinations(no_answer, application):
    assert no_answer_application(build_plan("2001", declaration(no_answer=no_answer)), SETTINGS) == application


def test_each_extension_is_two_priorities_and_the_logic_is_shared():
    declarations = {str(2000 + i): declaration(list=[str(3000 + i)]) for i in range(1, 101)}
    declarations["2050"]["enabled"] = False
    text = render(build_plans(declarations), SETTINGS)
    found = counts(text)
    assert found["followme"] == (99, 198)
    assert "2050," not in text.split("[followme-call]")[0]
    shared = sum(priorities for context, (_, priorities) in found.items() if context != "followme")
    one = counts(render(build_plans({"2001": declaration()}), SETTINGS))
    assert shared == sum(p for c, (_, p) in one.items() if c != "followme")  # independent of the number of extensions


def test_revision_changes_with_content_and_is_stable():
    a = render(build_plans({"2001": declaration()}), SETTINGS)
    b = render(build_plans({"2001": declaration(ring_time=21)}), SETTINGS)
    assert revision_of(a) != revision_of(b)
    assert a == render(build_plans({"2001": declaration()}), SETTINGS)
    assert a.startswith("; Managed by Ansible (role followme)")
    assert a.rstrip().endswith(f"NoOp({revision_of(a)})")


@pytest.mark.parametrize("bad", ["2001&PJSIP/9", "2001)", "20,01", "2001\n", "${SHELL}"])
def test_renderer_refuses_unsafe_dial_strings_even_without_validation(bad):
    with pytest.raises(ValueError, match="refusing to write"):
        render(build_plans({"2001": declaration(list=["2002", bad])}), SETTINGS)
    with pytest.raises(ValueError, match="refusing to write"):
        render(build_plans({bad: declaration()}), SETTINGS)


@pytest.mark.parametrize(("field", "value"), [
    ("context", "follow me"), ("device", "PJSIP/${EXTEN}"), ("outbound_context", "a;b"),
    ("voicemail_context", "x)"), ("confirm_prompt", "../x"), ("confirm_timeout", 0),
])
def test_renderer_refuses_unsafe_settings(field, value):
    settings = Settings(**{**SETTINGS.__dict__, field: value})
    with pytest.raises(ValueError):
        render({}, settings)


def test_free_text_never_reaches_the_file_raw():
    text = render(build_plans({"2001": declaration(cid_name_prefix="a.-b", alert_info="<x>;--y")}), SETTINGS)
    assert ";--" not in text and "<x>" not in text and "a.-b" not in text
    assert base64.b64encode(b"<x>;--y").decode() in text


ROOT = Path(__file__).resolve().parents[2]
# Values built to break out of a Set(), an expression ($[...]), an argument list or the file itself.
HOSTILE = [
    '" = "" | SHELL(touch /tmp/pwned) | "', "${SHELL(touch /tmp/pwned)}", "$[1|SHELL(touch /tmp/pwned)]",
    "a|b", 'a"b', "a'b", "a,b", "a)b", "a(b", "a\\b", "a{b}", "a\nexten => 1,1,System(touch /tmp/pwned)", "x\n",
    "a;b", "a;--b", "a^b", "a[b]", "", " " * 200,
]


def test_free_text_patterns_are_the_schemas():
    fields = json.loads((ROOT / "schemas" / "followme.schema.json").read_text())["definitions"]["fields"]
    for field, pattern in FREE_TEXT.items():
        schema_pattern = fields["properties"][field]["pattern"]
        assert schema_pattern.startswith("^") and schema_pattern.endswith("$")
        assert pattern.pattern == schema_pattern[1:-1] + "\\Z", field


@pytest.mark.parametrize("field", sorted(FREE_TEXT))
@pytest.mark.parametrize("value", HOSTILE + [7, True, ["FM "], {"a": 1}])
def test_renderer_rechecks_free_text_even_without_validation(field, value):
    if isinstance(value, str) and FREE_TEXT[field].match(value):  # e.g. ";" is an Alert-Info character
        text = render(build_plans({"2001": declaration(**{field: value})}), SETTINGS)
        assert value not in text
        return
    with pytest.raises(ValueError, match=f"refusing to write {field}"):
        render(build_plans({"2001": declaration(**{field: value})}), SETTINGS)


def _applications(text):
    """(application, argument text) of every priority of a rendered file."""
    for line in text.splitlines():
        match = re.match(r"(?:exten => [^,]+,\w+|\s*same => \w+)(?:\(\w+\))?,(\w+)\((.*)\)$", line)
        if match:
            yield match.group(1), match.group(2)


def test_decoded_free_text_is_only_ever_the_value_of_a_set():
    """BASE64_DECODE appears only right of a Set()'s "=", never in an expression or another argument list;
    no variable holds decoded text (it goes straight into CALLERID(name) or the Alert-Info header), and
    CALLERID(name) (which carries the prefix, and the caller's own name) is only ever a Set() value too."""
    text = render(build_plans({"2001": declaration(cid_name_prefix="FM ", alert_info="<http://x>;i=a")}), SETTINGS)
    decodes = 0
    for application, arguments in _applications(text):
        target, _, value = arguments.partition("=")
        for item in ("BASE64_DECODE", "${CALLERID(name)}"):
            if application == "Set":
                assert item not in target, arguments
                if item in value:
                    assert "$[" not in value and "IF(" not in value, arguments
                    decodes += item == "BASE64_DECODE"
            else:
                assert item not in arguments, (application, arguments)
    assert decodes == 2
    assert re.findall(r"Set\(([^=]+)=\$\{BASE64_DECODE", text) == ["CALLERID(name)", "PJSIP_HEADER(add,Alert-Info)"]


def test_gosub_free_text_is_base64_only():
    plan = build_plan("2001", declaration(cid_name_prefix="FM ", alert_info="<http://x>;i=a&b=%41~"))
    fields = gosub_arguments(plan).split(",")
    for encoded in fields[3:5]:
        assert re.fullmatch(r"[A-Za-z0-9+/=]+", encoded)
    assert base64.b64decode(fields[4]).decode() == "<http://x>;i=a&b=%41~"


def test_predial_handler_only_for_plans_with_an_alert_info():
    """Legs of a plan without Alert-Info are dialed with no pre-dial handler (FM_LEGOPTS is empty)."""
    text = render({}, SETTINGS)
    leg = text.split("\n[followme-leg]\n")[1].split("\n[")[0]
    assert ",b(" not in leg and "predial" not in leg
    assert 'Set(__FM_LEGOPTS=${IF($["${ARG5}" = ""]?:b(followme-predial^s^1))})' in text
    assert "Dial(PJSIP/${fm_num},${fm_ring},${FM_LEGOPTS})" in text
    without = gosub_arguments(build_plan("2001", declaration()))
    assert without.split(",")[4] == ""


def test_extensions_are_written_in_descending_order():
    """pbx_config inserts into a list sorted by strcmp and walked from its head: descending order is O(1) each."""
    extensions = ["2001", "999", "10000", "2", "30", "2999", "100000000000000"]
    text = render(build_plans({e: declaration(list=["2002"]) for e in extensions}), SETTINGS)
    written = re.findall(r"^exten => (\d+),1,", text, re.M)
    assert written == sorted(extensions, reverse=True)
    assert counts(text)["followme"] == (len(extensions), 2 * len(extensions))


def test_device_template():
    custom = Settings(**{**SETTINGS.__dict__, "device": "PJSIP/{extension}@phones"})
    text = render(build_plans({"2001": declaration()}), custom)
    assert "Dial(PJSIP/${fm_num}@phones,${fm_ring}," in text


# -- issue 9 ------------------------------------------------------------------------------------------

def test_memoryhunt_is_one_dial_with_joining_legs():
    plan = build_plan("2005", declaration(strategy="memoryhunt", initial_ring_time=2, ring_time=3,
                                          list=["2006", "2007", "2008"]))
    assert gosub_arguments(plan).endswith(",pre:2:0e2005,grow:3:0i2006-0i2007-0i2008")
    text = render(build_plans({"2005": declaration(strategy="memoryhunt")}), SETTINGS)
    # the delay of leg k is (k-1)*SECONDS, the Dial lasts k*SECONDS; grow steps do not loop over rounds
    assert "Set(LOCAL(delay)=$[${CUT(leg,${kind},1)} + (${grown} - 1) * ${secs}])" in text
    assert 'Set(LOCAL(leg)=${delay}${kind}${num}${IF($["${ring}" = ""]?:t${ring})})' in text
    assert 'ExecIf($["${pick}" = "grow"]?Set(LOCAL(wait)=$[${grown} * ${secs}]))' in text


def test_declared_prompts_travel_as_gosub_data_and_fall_back_to_the_site():
    plan = build_plan("2001", declaration(confirm_calls=True, confirm_prompt="followme/call-from",
                                          too_late_prompt="custom/late"))
    assert ",1,,,,,followme/call-from,custom/late,,,1,all:" in gosub_arguments(plan)
    text = render(build_plans({"2001": declaration()}), SETTINGS)
    assert 'Set(__FM_CPROMPT=${IF($["${ARG8}" = ""]?followme/options:${ARG8})})' in text
    assert "Read(fm_key,${FM_CPROMPT},1,,1,5)" in text and "Playback(${FM_LPROMPT})" in text


@pytest.mark.parametrize("field", ["confirm_prompt", "too_late_prompt"])
@pytest.mark.parametrize("bad", ["../x", "a,b", "x)", "${EXTEN}", "a;b"])
def test_renderer_refuses_unsafe_prompts_even_without_validation(field, bad):
    with pytest.raises(ValueError, match=f"refusing to write {field}"):
        render(build_plans({"2001": declaration(**{field: bad})}), SETTINGS)


def test_timed_entries_become_leg_codes_with_their_own_ring_time():
    plan = build_plan("2001", declaration(strategy="ringall", initial_ring_time=0, ring_time=6,
                                          list=[{"number": "2002", "delay": 2, "ring_time": 3}, "909121234567#"]))
    assert gosub_arguments(plan).endswith(",all:6:2i2002t3-0x909121234567")
    hunt = build_plan("2001", declaration(strategy="hunt", initial_ring_time=0,
                                          list=["2002", {"number": "2003", "ring_time": 4}]))
    assert gosub_arguments(hunt).endswith(",each:20:0i2002-0i2003t4")


@pytest.mark.parametrize(("delay", "ring"), [(-1, None), (True, None), (1000, None), (0, 0), (0, "5"), (0, 1.5)])
def test_renderer_refuses_bad_timing_even_without_validation(delay, ring):
    plan = CallPlan("2001", "ringall", (Step("all", 5, (Leg("2002", delay=delay, ring=ring),)),), NoAnswer("hangup"))
    with pytest.raises(ValueError, match="refusing to write"):
        render({"2001": plan}, SETTINGS)


@pytest.mark.parametrize(("mode", "number", "argument"), [
    ("default", None, ""), ("fixed", "+982155501111", "fixed:+982155501111"), ("dialed", None, "dialed:"),
    ("force_dialed", "0215", "force_dialed:0215"), ("outside_fixed", "0215", "outside_fixed:0215"),
])
def test_external_caller_id_is_gosub_data(mode, number, argument):
    plan = build_plan("2001", declaration(external_cid_mode=mode, external_cid_number=number))
    assert gosub_arguments(plan).split(",")[9] == argument  # ARG10


@pytest.mark.parametrize(("mode", "number"), [("fixed", "12;34"), ("fixed", ""), ("fixed", "+1${X}"),
                                              ("fixd", "123"), ("force_dialed", None), ("outside_fixed", "1 2")])
def test_renderer_refuses_unsafe_caller_ids_even_without_validation(mode, number):
    with pytest.raises(ValueError, match="refusing to write external_cid"):
        render(build_plans({"2001": declaration(external_cid_mode=mode, external_cid_number=number)}), SETTINGS)


def test_schedule_is_gosub_data():
    schedule = {"active": "outside", "timezone": "Asia/Tehran",
                "ranges": [{"times": "22:00-06:00"}, {"weekdays": "sat-sun", "months": "jun-aug"}]}
    plan = build_plan("2001", declaration(schedule=schedule))
    assert gosub_arguments(plan).split(",")[10] == "o~22:00-06:00!*!*!*!Asia/Tehran~*!sat-sun!*!jun-aug!Asia/Tehran"
    assert gosub_arguments(build_plan("2001", declaration(schedule={"ranges": [{}]}))).split(",")[10] == "i~*!*!*!*!"
    text = render(build_plans({"2001": declaration()}), SETTINGS)
    assert "Goto(from-internal,${fm_back},2)" in text  # inactive: the site's own handling, priority 2


@pytest.mark.parametrize("bad", [
    {"ranges": [{"times": "09:00-17:00,*"}]}, {"ranges": [{"weekdays": "mon)"}]}, {"ranges": [{"days": "${X}"}]},
    {"ranges": [{"months": "jan;x"}]}, {"timezone": "UTC,1", "ranges": [{}]}, {"active": "both", "ranges": [{}]},
    {"ranges": []},
])
def test_renderer_refuses_unsafe_schedules_even_without_validation(bad):
    with pytest.raises(ValueError, match="refusing to write schedule"):
        render(build_plans({"2001": declaration(schedule=bad)}), SETTINGS)


TOGGLE_SETTINGS = Settings(**{**SETTINGS.__dict__, "toggle_code": "*21"})


def test_users_switch_renders_disabled_declarations_with_a_label_and_one_pattern_hint():
    declarations = {"2001": declaration(), "2002": declaration(enabled=False), "123456": declaration(list=["2001"])}
    text = render(build_plans(declarations, with_disabled=True), TOGGLE_SETTINGS)
    assert " same => n(disabled),VoiceMail(2001@default,u)" in text  # 2002's no-answer line carries the label
    assert "exten => 2002,1,Gosub(followme-call" in text
    # its first character a set, [*]: the trie matcher keeps a lamp on a pattern starting with a plain character
    hints = [line for line in text.splitlines() if ",hint," in line]
    assert hints == ["exten => _[*]21X.,hint,Custom:FOLLOWME${EXTEN:3}"]
    assert "exten => *21,1,Set(fm_base=" in text and '"${fm_base}" != "PJSIP/${fm_ext}"' in text
    # a call reads ON (ARG12) from its own Gosub data: no second lookup in the follow-me context
    assert 'Set(LOCAL(on)=${IF($["${ARG12}" = "0"]?off:on)})' in text and "DIALPLAN_EXISTS(followme,${ARG1}" not in text
    assert "exten => 2002,1,Gosub(followme-call,s,1(2002,2002,0,,,,,,,,,0,all:" in text
    found = counts(text)
    assert found["followme"] == (3, 6) and found["followme-toggle"][0] == 2  # *21 and one pattern hint for all


def test_without_a_toggle_code_disabled_declarations_are_left_out():
    declarations = {"2001": declaration(), "2002": declaration(enabled=False)}
    text = render(build_plans(declarations, with_disabled=True), SETTINGS)
    assert "2002,1" not in text and "followme-toggle" not in text and "DB_EXISTS" not in text
    assert counts(text)["followme"] == (1, 2)


@pytest.mark.parametrize("bad", ["*21;", "21", "*", "*2#", "${X}", "*123456789", "*21\n"])
def test_renderer_refuses_unsafe_toggle_codes(bad):
    with pytest.raises(ValueError, match="refusing to write toggle_code"):
        render({}, Settings(**{**SETTINGS.__dict__, "toggle_code": bad}))
