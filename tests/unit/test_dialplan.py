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
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plan, build_plans

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
    assert gosub_arguments(plan) == ("2001,2001,0,Rk0g,PGh0dHA6Ly94PjtpbmZvPWFsZXJ0LWV4dGVybmFs,,,"
                                     "all:27:0e2001-7i2002-7x909121234567")
    hunt = build_plan("2002", declaration(strategy="hunt-prim", initial_ring_time=3, ring_time=4,
                                          list=["2003", "2004"], confirm_calls=True, music_on_hold="default",
                                          announcement="custom/hold"))
    assert gosub_arguments(hunt) == "2002,2003,1,,,default,custom/hold,pre:3:0e2002,each:4:0i2003-0i2004"


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
    assert "b(" not in leg and "predial" not in leg
    assert 'Set(__FM_LEGOPTS=${IF($["${ARG5}" = ""]?:b(followme-predial^s^1))})' in text
    assert "Dial(PJSIP/${fm_num},,${FM_LEGOPTS})" in text
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
    assert "Dial(PJSIP/${fm_num}@phones,," in text
