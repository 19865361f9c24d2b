"""Properties of validation, with hostile generated values.

1. A character outside a field's allowed set never passes, in any dial-string or free-text field.
2. Every string field of a declaration and every role variable: a generated value is either rejected on the
   controller, or the host's dialplan rendered by plugins/module_utils/dialplan.py holds it only inside the
   renderer's strict patterns (free text only base64-encoded), and the file keeps its shape: the same contexts,
   extensions and priorities as with a plain value, every line a comment, a context header or a priority with
   no `;` (a comment) in it.
"""

import base64
import dataclasses
import re
import string

import pytest
from ansible_collections.followme.asterisk.plugins.module_utils import dialplan
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DIGITS = set(string.digits)
NAME = set(string.ascii_letters + string.digits + "_-")

# field -> (declaration holding the value, predicate: is this character allowed in the field?)
FIELDS = {
    "extension key": (lambda v: {v: {"list": ["2002"]}}, DIGITS.__contains__),
    "list entry": (lambda v: {"2001": {"list": [v]}}, set(string.digits + "*+#").__contains__),
    "no_answer.voicemail": (lambda v: {"2001": {"list": ["2002"], "no_answer": {"voicemail": v}}},
                            DIGITS.__contains__),
    "no_answer.extension": (lambda v: {"2001": {"list": ["2002"], "no_answer": {"extension": v}}},
                            DIGITS.__contains__),
    "no_answer.goto.context": (
        lambda v: {"2001": {"list": ["2002"], "no_answer": {"goto": {"context": v, "extension": "s"}}}},
        NAME.__contains__),
    "no_answer.goto.extension": (
        lambda v: {"2001": {"list": ["2002"], "no_answer": {"goto": {"context": "c", "extension": v}}}},
        set(string.ascii_letters + string.digits + "*#+").__contains__),
    "no_answer.goto.priority": (
        lambda v: {"2001": {"list": ["2002"], "no_answer": {"goto": {"context": "c", "extension": "s",
                                                                      "priority": v}}}},
        set(string.ascii_letters + string.digits + "_").__contains__),
    "cid_name_prefix": (lambda v: {"2001": {"list": ["2002"], "cid_name_prefix": v}},
                        lambda c: re.fullmatch(r"[\w .:+-]", c) is not None),
    "alert_info": (lambda v: {"2001": {"list": ["2002"], "alert_info": v}},
                   set(string.ascii_letters + string.digits + "<>:/._;=@?&%~+-").__contains__),
    "music_on_hold": (lambda v: {"2001": {"list": ["2002"], "music_on_hold": v}}, NAME.__contains__),
    "announcement": (lambda v: {"2001": {"list": ["2002"], "announcement": v}}, (NAME | {"/"}).__contains__),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_character_outside_the_allowed_set_never_passes(checker, field, data):
    build, allowed = FIELDS[field]
    bad = data.draw(st.characters(codec="utf-8").filter(lambda c: not allowed(c)), label="bad character")
    around = st.text(alphabet=st.characters(codec="utf-8").filter(allowed), max_size=8)
    value = data.draw(around) + bad + data.draw(around)
    _, errors = checker.check_host("pbx1", {"followme": build(value)})
    assert errors, f"{field} accepted {value!r}"


@settings(max_examples=300, deadline=None)
@given(entry=st.from_regex(r"\A(?:[0-9]{1,15}|\+?[0-9*]{1,30}#)\Z"))
def test_every_well_formed_entry_passes_the_schema(checker, entry):
    _, errors = checker.check_host("pbx1", {"followme": {"2001": {"list": [entry]}},
                                            "followme_external_deny": []})
    assert errors == []


# -- 2. accepted values reach the dialplan only inside strict patterns ---------------------------------

#: Pieces that break out of a dial string, a config line or an Asterisk expression, and some that are harmless.
HOSTILE = ['"', "'", ",", "|", ";", ";--", "\n", "\r", "${", "}", "$[", "]", "[", "(", ")", "SHELL(id)",
           "${SHELL(touch /tmp/x)}", "&", "^", "\\", "/", "..", "@", "#", "#exec", " ", "*", "+", "=", ":", "\x00",
           "\u0661", "\u200b", "é", "0", "9", "00", "2001", "s", "a", "_", "-", "{extension}", "PJSIP/"]
VALUES = st.one_of(
    st.text(max_size=24),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(alphabet=string.ascii_letters + string.digits, max_size=6)),
             max_size=8).map("".join),
)

BASE = {"list": ["2001", "2002", "909121234567#"], "confirm_calls": True, "cid_name_prefix": "FM ",
        "alert_info": "<http://x>;info=alert-external", "music_on_hold": "default", "announcement": "custom/x",
        "no_answer": {"goto": {"context": "ivr", "extension": "s", "priority": 1}}}


def _declaration(**fields):
    return {"2001": {**BASE, **fields}}


def _goto(**fields):
    return {"no_answer": {"goto": {**BASE["no_answer"]["goto"], **fields}}}


NUMBER = r"[0-9]{1,15}"
# where -> (host variables holding the value, the strict pattern an accepted value must match in full, free text?)
TARGETS = {
    "extension key": (lambda v: {"followme": {v: BASE}}, dialplan._NUMBER, False),
    "list entry": (lambda v: {"followme": _declaration(list=["2001", v])},
                   re.compile(rf"({NUMBER}|\+?[0-9*]{{1,30}}#)\Z"), False),
    "no_answer.voicemail": (lambda v: {"followme": _declaration(no_answer={"voicemail": v})}, dialplan._NUMBER, False),
    "no_answer.extension": (lambda v: {"followme": _declaration(no_answer={"extension": v})}, dialplan._NUMBER, False),
    "no_answer.goto.context": (lambda v: {"followme": _declaration(**_goto(context=v))}, dialplan._NAME, False),
    "no_answer.goto.extension": (lambda v: {"followme": _declaration(**_goto(extension=v))},
                                 dialplan._GOTO_EXTEN, False),
    "no_answer.goto.priority": (lambda v: {"followme": _declaration(**_goto(priority=v))}, dialplan._PRIORITY, False),
    "cid_name_prefix": (lambda v: {"followme": _declaration(cid_name_prefix=v)}, None, True),
    "alert_info": (lambda v: {"followme": _declaration(alert_info=v)}, None, True),
    "music_on_hold": (lambda v: {"followme": _declaration(music_on_hold=v)}, dialplan._NAME, False),
    "announcement": (lambda v: {"followme": _declaration(announcement=v)}, dialplan._SOUND, False),
    "followme_context": (lambda v: {"followme": _declaration(), "followme_context": v}, dialplan._NAME, False),
    "followme_device": (lambda v: {"followme": _declaration(), "followme_device": v}, dialplan._DEVICE, False),
    "followme_outbound_context": (lambda v: {"followme": _declaration(), "followme_outbound_context": v},
                                  dialplan._NAME, False),
    "followme_extension_context": (lambda v: {"followme": _declaration(), "followme_extension_context": v},
                                   dialplan._NAME, False),
    "followme_voicemail_context": (lambda v: {"followme": _declaration(), "followme_voicemail_context": v},
                                   dialplan._NAME, False),
    "followme_confirm_prompt": (lambda v: {"followme": _declaration(), "followme_confirm_prompt": v},
                                dialplan._SOUND, False),
    "followme_too_late_prompt": (lambda v: {"followme": _declaration(), "followme_too_late_prompt": v},
                                 dialplan._SOUND, False),
}
#: Role variables that never reach the dialplan (the module uses them on the PBX): accepted only when strict.
FILE_VARIABLES = {
    "followme_config_dir": re.compile(r"(/(?!\.\.?(/|$))[A-Za-z0-9_.+-]+)+/?\Z"),
    "followme_file_owner": re.compile(r"([A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})\Z"),
    "followme_file_group": re.compile(r"([A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})\Z"),
    "followme_file_mode": re.compile(r"0?[0-7][0145][0145]\Z"),
}
_LINE = re.compile(r"(;[^\n\r]*|\[[A-Za-z0-9_-]{1,79}\]|exten => [^;\n\r]*|same => [^;\n\r]*|)\Z")


def render(result):
    fields = {field.name for field in dataclasses.fields(dialplan.Settings)}
    values = {name: result.settings[f"followme_{name}"] for name in fields if f"followme_{name}" in result.settings}
    return dialplan.render(build_plans(result.declarations), dialplan.Settings(**values))


def shape(text):
    return list(dialplan.counts(text).values())


def assert_sound(text):
    for line in text.splitlines():
        assert _LINE.match(line.lstrip(" ")), f"line out of shape: {line!r}"


@pytest.fixture(scope="module")
def baseline(checker):
    result = checker.check("pbx1", {"followme": _declaration()})
    assert result.errors == []
    return shape(render(result))


@pytest.mark.parametrize("where", sorted(TARGETS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_a_value_is_refused_or_reaches_the_dialplan_only_inside_its_strict_pattern(checker, baseline, where, value):
    build, strict, free_text = TARGETS[where]
    result = checker.check("pbx1", {**build(value), "followme_external_deny": []})
    if result.errors:
        return
    text = render(result)
    assert_sound(text)
    assert shape(text) == baseline
    if free_text:
        # Free text is only ever written base64-encoded.
        assert base64.b64encode(value.encode()).decode() in text
        assert re.fullmatch(r"[\w .:+-]{1,20}|[A-Za-z0-9<>:/._;=@?&%~+-]{1,128}", value), value
    else:
        assert strict.match(str(value)), f"{where} accepted {value!r}, outside {strict.pattern}"


@pytest.mark.parametrize("where", sorted(FILE_VARIABLES))
@settings(max_examples=150, deadline=None)
@given(value=VALUES)
def test_a_file_variable_is_refused_unless_strict(checker, where, value):
    result = checker.check("pbx1", {"followme": _declaration(), where: value})
    if not result.errors:
        assert FILE_VARIABLES[where].match(value), f"{where} accepted {value!r}"


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.integers(-10, 10_000), st.booleans(), st.floats(allow_nan=False), st.none()))
def test_confirm_timeout_and_mode_take_only_what_the_renderer_and_module_take(checker, value):
    result = checker.check("pbx1", {"followme": _declaration(), "followme_confirm_timeout": value})
    accepted = not result.errors
    assert accepted == (type(value) is int and 1 <= value <= 60), value
    if accepted:
        assert f",1,,1,{value})" in render(result)
    result = checker.check("pbx1", {"followme": _declaration(), "followme_file_mode": value})
    if not result.errors:
        assert type(value) is int and value & 0o7022 == 0 and 0 <= value <= 0o777, value
