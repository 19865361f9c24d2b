"""Role variables: checked on the controller with the declarations, by the rules the renderer enforces."""

import re
import string

import pytest
from ansible_collections.followme.asterisk.plugins.module_utils import dialplan
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    ROLE_VARIABLES,
    VARIABLES,
    mode_problem,
    suspicious,
)
from hypothesis import given, settings
from hypothesis import strategies as st

GOOD = {"followme": {"2001": {"list": ["2001", "2002", "909121234567#"]}}}


def errors_of(checker, **variables):
    return [str(error) for error in checker.check("pbx1", {**GOOD, **variables}).errors]


def test_the_schema_covers_every_role_variable(schema):
    assert tuple(schema["properties"]) == VARIABLES
    for name in ROLE_VARIABLES:
        assert "default" in schema["properties"][name], name


def test_defaults_pass(checker, schema):
    assert errors_of(checker, **{name: schema["properties"][name]["default"] for name in ROLE_VARIABLES}) == []


@pytest.mark.parametrize(("name", "value"), [
    ("followme_context", "fm"),
    ("followme_context", "x" * 70),
    ("followme_device", "SIP/{extension}"),
    ("followme_device", "PJSIP/{extension}@trunk.example"),
    ("followme_device", "Local/{extension}@from-internal"),
    ("followme_outbound_context", "outbound-allroutes"),
    ("followme_extension_context", "ext-local"),
    ("followme_voicemail_context", "x" * 79),
    ("followme_confirm_prompt", "custom/press-1"),
    ("followme_too_late_prompt", "a/b/c/d/e"),
    ("followme_confirm_timeout", 1),
    ("followme_confirm_timeout", 60),
    ("followme_config_dir", "/etc/asterisk/"),
    ("followme_config_dir", "/opt/pbx/etc.d"),
    ("followme_file_owner", "asterisk"),
    ("followme_file_owner", "0"),
    ("followme_file_group", "_pbx.users-1"),
    ("followme_file_mode", "0640"),
    ("followme_file_mode", "640"),
    ("followme_file_mode", "0600"),
    ("followme_file_mode", "0444"),
    ("followme_file_mode", 0o640),  # written 0640 unquoted: YAML 1.1 makes it 416, the same mode
])
def test_good_role_variables_pass(checker, name, value):
    assert errors_of(checker, **{name: value}) == []


@pytest.mark.parametrize(("name", "value", "says"), [
    ("followme_context", "follow me", "An Asterisk context name"),
    ("followme_context", "x" * 71, "at most 70 characters long"),
    ("followme_context", "fm;x", "An Asterisk context name"),
    ("followme_context", "fm\n", "An Asterisk context name"),
    ("followme_context", 7, "must be a string, not an integer"),
    ("followme_device", "PJSIP/2001", "{extension} once"),
    ("followme_device", "PJSIP/{extension}&PJSIP/666", "{extension} once"),
    ("followme_device", "PJSIP/{extension},,b(x)", "{extension} once"),
    ("followme_device", "${SHELL(id)}/{extension}", "{extension} once"),
    ("followme_outbound_context", "a,b", "An Asterisk context name"),
    ("followme_outbound_context", "followme-leg", "is one of the role's own contexts"),
    ("followme_extension_context", "followme", "is one of the role's own contexts"),
    ("followme_extension_context", "FOLLOWME-call", "is one of the role's own contexts"),
    ("followme_voicemail_context", "", "An Asterisk context name"),
    ("followme_confirm_prompt", "../../etc/passwd", "A sound file"),
    ("followme_confirm_prompt", "a b", "A sound file"),
    ("followme_too_late_prompt", "x&y", "A sound file"),
    ("followme_confirm_timeout", True, "must be an integer, not a boolean"),
    ("followme_confirm_timeout", "5", "must be an integer, not a string"),
    ("followme_confirm_timeout", 5.0, "must be an integer, not a decimal number"),
    ("followme_confirm_timeout", 0, "must be at least 1"),
    ("followme_confirm_timeout", 61, "must be at most 60"),
    ("followme_config_dir", "etc/asterisk", "an absolute path"),
    ("followme_config_dir", "/etc/../tmp", "an absolute path"),
    ("followme_config_dir", "/etc/aster isk", "an absolute path"),
    ("followme_config_dir", "/etc/asterisk\n", "an absolute path"),
    ("followme_config_dir", "/" + "x" * 255, "at most 255 characters long"),
    ("followme_file_owner", "root;id", "A user or group name"),
    ("followme_file_owner", "-r", "A user or group name"),
    ("followme_file_group", "", "A user or group name"),
    ("followme_file_group", 1000, "must be a string, not an integer"),
    ("followme_file_mode", "0664", "lets group or other write the file"),
    ("followme_file_mode", "0646", "lets group or other write the file"),
    ("followme_file_mode", "2640", "setuid, setgid or sticky bit"),
    ("followme_file_mode", "4640", "setuid, setgid or sticky bit"),
    ("followme_file_mode", 640, "sticky bit (an unquoted number in YAML is taken as a number: 640 is octal 1200"),
    ("followme_file_mode", 0o664, "(an unquoted number in YAML is taken as a number: 436 is octal 664"),
    ("followme_file_mode", 99999, "is no file mode"),
    ("followme_file_mode", -1, "is no file mode"),
    ("followme_file_mode", "u=rw,g=r", "symbolic modes are not supported"),
    ("followme_file_mode", "a+r", "symbolic modes are not supported"),
    ("followme_file_mode", "rw-r-----", "is no octal file mode"),
    ("followme_file_mode", "0o640", "is no octal file mode"),
    ("followme_file_mode", "0948", "is no octal file mode"),
    ("followme_file_mode", True, "not a boolean"),
    ("followme_file_mode", None, "not null"),
    ("followme_file_mode", [416], "not a list"),
])
def test_bad_role_variables_are_named_with_what_is_accepted(checker, name, value, says):
    errors = errors_of(checker, **{name: value})
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"pbx1: {name} = "), errors
    assert says in errors[0], errors
    assert "Accepted:" in errors[0] or "accepted" in errors[0] or "'0640'" in errors[0]


def test_an_own_context_follows_followme_context(checker):
    assert errors_of(checker, followme_context="fm", followme_outbound_context="followme-leg") == []
    errors = errors_of(checker, followme_context="fm", followme_outbound_context="fm-leg")
    assert errors == ['pbx1: followme_outbound_context = "fm-leg": is one of the role\'s own contexts (fm and fm-*): '
                      "calls would loop inside follow-me. Accepted: the site's own context"]


# -- unknown variables ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "hint"), [
    ("folowme", "did you mean 'followme'?"),
    ("followme_defualts", "did you mean 'followme_defaults'?"),
    ("followme_contxt", "did you mean 'followme_context'?"),
    ("Followme_Context", "did you mean 'followme_context'?"),
    ("followme_colour", "accepted: followme, followme_host"),
    ("follow_me", "did you mean 'followme'?"),
    ("followme_extrnal_deny", "did you mean 'followme_external_deny'?"),
])
def test_unknown_followme_variables_are_errors_with_a_did_you_mean(checker, name, hint):
    errors = errors_of(checker, **{name: {"2001": {"list": ["2002"]}}})
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"pbx1: {name} = (...): unknown variable {name!r}"), errors
    assert hint in errors[0]


def test_other_variables_are_left_alone(checker):
    others = {"ansible_host": "192.0.2.1", "inventory_hostname": "pbx1", "group_names": ["pbx"], "follow": 1,
              "pbx_followers": [], "voicemail_context": "x", "role_names": []}
    assert errors_of(checker, **others) == []
    assert not any(suspicious(name, VARIABLES) for name in others)


def test_variables_the_role_declares_elsewhere_are_known(checker):
    """A variable in the role's argument_specs (the action plugin passes them) is no unknown variable."""
    result = checker.check("pbx1", {**GOOD, "followme_allow_wipe": True}, known_names={"followme_allow_wipe"})
    assert result.errors == []


# -- the schema and the renderer agree ---------------------------------------------------------------

#: Role variable -> the renderer's pattern for it (plugins/module_utils/dialplan.py, Settings.check).
RENDERER = {
    "followme_context": dialplan._NAME,
    "followme_outbound_context": dialplan._NAME,
    "followme_extension_context": dialplan._NAME,
    "followme_voicemail_context": dialplan._NAME,
    "followme_device": dialplan._DEVICE,
    "followme_confirm_prompt": dialplan._SOUND,
    "followme_too_late_prompt": dialplan._SOUND,
}
CORPUS = ["followme", "from-internal", "a", "A_b-9", "x" * 70, "x" * 71, "x" * 79, "x" * 80, "", " ", "a b", "a,b",
          "a;b", "a\n", "\na", "a\x00", "a/b", "a.b", "é", "\u0661", "ctx$", "${X}", "[x]", "PJSIP/{extension}",
          "SIP/{extension}@trunk", "Local/{extension}@ctx-1.a", "PJSIP/{extension}{extension}", "{extension}",
          "/{extension}", "PJSIP/{extension}&x", "PJSIP/{EXTENSION}", "P" * 40 + "{extension}" + "x" * 40,
          "P" * 41 + "{extension}", "PJSIP/{extension}" + "x" * 41, "followme/options", "custom/a/b/c/d",
          "a/b/c/d/e/f", "a//b", "/a", "a/", "../a", "x" * 64, "x" * 65, "custom/" + "y" * 64]


def _schema_accepts(checker, name, value) -> bool:
    """The variable's own rules (not the cross-check that keeps the role's own contexts apart)."""
    return not [error for error in checker.check("pbx1", {**GOOD, name: value}).errors
                if "role's own contexts" not in error.message]


def _compare(checker, name, value):
    renderer = RENDERER[name].match(value) is not None
    schema = _schema_accepts(checker, name, value)
    if name == "followme_context":
        # The schema is stricter by design: <context>-revision must stay within Asterisk's 79 characters.
        assert schema == (renderer and len(value) <= 70), (name, value)
    else:
        assert schema == renderer, (name, value, schema, renderer)


@pytest.mark.parametrize("name", sorted(RENDERER))
def test_schema_and_renderer_accept_the_same_corpus(checker, name):
    for value in CORPUS:
        _compare(checker, name, value)


@pytest.mark.parametrize("name", sorted(RENDERER))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_schema_and_renderer_accept_the_same_generated_values(checker, name, data):
    value = data.draw(st.one_of(st.from_regex(RENDERER[name]),
                                st.text(alphabet=string.ascii_letters + string.digits + "_-/{}@.;, \n", max_size=30),
                                st.text(max_size=12)))
    _compare(checker, name, value)


def test_schema_confirm_timeout_is_the_renderer_range(checker):
    for value in range(-2, 70):
        renderer = True
        try:
            dialplan.Settings("followme", "PJSIP/{extension}", "a", "b", "c", "d/e", "f", value).check()
        except ValueError:
            renderer = False
        assert _schema_accepts(checker, "followme_confirm_timeout", value) == renderer, value


@pytest.mark.parametrize("value", [0o640, 0o600, 0o400, 0o440, 0o444, 0o755, 0o750, 0o700, 0o644])
def test_mode_written_as_an_unquoted_octal_number_is_its_mode(value):
    assert mode_problem(value, r"^0?[0-7][0145][0145]$") is None
    assert mode_problem(f"0{value:o}", r"^0?[0-7][0145][0145]$") is None


@settings(max_examples=500, deadline=None)
@given(bits=st.integers(0, 0o7777))
def test_every_mode_without_group_or_other_write_or_set_id_passes_and_no_other(checker, bits):
    text = f"{bits:04o}"
    accepted = not checker.check("pbx1", {**GOOD, "followme_file_mode": text}).errors
    assert accepted == (bits & 0o7022 == 0), text
    assert accepted == (not checker.check("pbx1", {**GOOD, "followme_file_mode": bits}).errors), bits
    if accepted:
        assert re.fullmatch(r"0?[0-7][0145][0145]", text)
