"""Field rules and cross-checks of the declaration format, with bad and good values."""

import pytest
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import check_hosts

GOOD = {"list": ["2001", "2002", "909121234567#"]}


def one(**fields):
    return {"2001": {**GOOD, **fields}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("list", ["2001"]),
        ("list", [str(2000 + i) for i in range(1, 21)]),
        ("list", ["9*31#", "123456789012345"]),
        ("initial_ring_time", 0),
        ("initial_ring_time", 60),
        ("ring_time", 1),
        ("ring_time", 60),
        ("strategy", "ringall"),
        ("strategy", "firstnotonphone"),
        ("no_answer", "hangup"),
        ("no_answer", {"voicemail": "2001"}),
        ("no_answer", {"extension": "2009"}),
        ("no_answer", {"goto": {"context": "ivr-main", "extension": "s", "priority": 1}}),
        ("no_answer", {"goto": {"context": "ivr", "extension": "*98", "priority": "start"}}),
        ("enabled", False),
        ("confirm_calls", True),
        ("cid_name_prefix", "FM "),
        ("cid_name_prefix", "موبایل: "),
        ("cid_name_prefix", None),
        ("alert_info", "<http://x>;info=alert-external"),
        ("music_on_hold", "default"),
        ("announcement", "custom/please-hold"),
    ],
)
def test_good_values_pass(check, field, value):
    declarations, errors = check(one(**{field: value}))
    assert errors == []
    assert declarations["2001"][field] == value


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("list", [], "at least 1 entries"),
        ("list", [str(2000 + i) for i in range(1, 22)], "at most 20 entries"),
        ("list", ["2001", "2001"], "unique"),
        ("list", "2001", "must be a list"),
        ("list", [2001], "must be a string"),
        ("list", ["20a1"], "internal extension"),
        ("list", ["1234567890123456"], "internal extension"),
        ("list", ["9091212#34#"], "external number"),
        ("list", ["++98912#"], "external number"),
        ("list", ["98+912#"], "external number"),
        ("list", ["2001&PJSIP/666"], "internal extension"),
        ("list", ["2001\n"], "internal extension"),
        ("list", ["909121234567"], None),  # valid internal? 12 digits is a valid internal extension
        ("initial_ring_time", -1, "at least 0"),
        ("initial_ring_time", 61, "at most 60"),
        ("initial_ring_time", "7", "must be an integer, not a string"),
        ("initial_ring_time", 7.0, "must be an integer, not a decimal number"),
        ("initial_ring_time", True, "must be an integer, not a boolean"),
        ("ring_time", 0, "at least 1"),
        ("ring_time", 61, "at most 60"),
        ("ring_time", "10", "must be an integer"),
        ("strategy", "hunts", "must be one of"),
        ("strategy", "RINGALL", "must be one of"),
        ("no_answer", "voicemail", "Where an unanswered call goes"),
        ("no_answer", {"voicemail": "2001", "extension": "2002"}, "Where an unanswered call goes"),
        ("no_answer", {"voicemail": 2001}, "must be a string"),
        ("no_answer", {"extension": "20x1"}, "An extension"),
        ("no_answer", {"goto": {"context": "a b", "extension": "s"}}, "A context name"),
        ("no_answer", {"goto": {"context": "ivr", "extension": "#exec"}}, "An extension name"),
        ("no_answer", {"goto": {"context": "ivr", "extension": "s", "priority": 0}}, "at least 1"),
        ("no_answer", {"goto": {"context": "ivr"}}, "missing required field 'extension'"),
        ("enabled", "yes", "must be a boolean"),
        ("enabled", 1, "must be a boolean"),
        ("confirm_calls", "true", "must be a boolean"),
        ("cid_name_prefix", "", "Text put before"),
        ("cid_name_prefix", "a;b", "Text put before"),
        ("cid_name_prefix", "x" * 21, "Text put before"),
        ("alert_info", "a,b", "Alert-Info"),
        ("alert_info", 'x"y', "Alert-Info"),
        ("music_on_hold", "my class", "Music-on-hold"),
        ("announcement", "../etc/passwd", "Sound file"),
        ("announcement", "custom/", "Sound file"),
    ],
)
def test_bad_values_are_named(check, field, value, says):
    _, errors = check(one(**{field: value}))
    if says is None:
        assert errors == []
        return
    assert len(errors) >= 1, f"{field}={value!r} passed"
    text = "\n".join(errors)
    assert text.startswith("pbx1: extension 2001: ")
    assert field in text
    assert says in text


def test_unknown_field_names_a_close_match(check, schema):
    _, errors = check(one(ringtime=5))
    accepted = ", ".join(sorted(schema["definitions"]["fields"]["properties"]))  # the fields grow (issue 9)
    assert errors == [
        "pbx1: extension 2001: ringtime = 5: unknown field 'ringtime'; did you mean 'ring_time'? Accepted: "
        + accepted
    ]
    assert accepted.startswith("alert_info, announcement, cid_name_prefix, confirm_calls, ")


def test_list_is_required(check):
    _, errors = check({"2001": {"strategy": "hunt"}})
    assert errors == ["pbx1: extension 2001: (declaration) = {\"strategy\": \"hunt\"}: missing required field 'list'"]


@pytest.mark.parametrize("key", [2001, "20a", "", "1234567890123456"])
def test_extension_keys_are_quoted_digits(check, key):
    _, errors = check({key: GOOD})
    assert any("(extension key)" in error and "quoted string" in error for error in errors), errors


def test_defaults_are_merged_under_each_declaration(check, schema):
    declarations, errors = check(
        {"2001": GOOD, "2002": {"list": ["2003"], "ring_time": 9}},
        followme_defaults={"ring_time": 30, "cid_name_prefix": "FM "},
    )
    assert errors == []
    assert declarations["2001"]["ring_time"] == 30
    assert declarations["2002"]["ring_time"] == 9
    assert declarations["2002"]["cid_name_prefix"] == "FM "
    # Everything else comes from the schema's defaults; no_answer defaults to the extension's own voicemail.
    assert declarations["2001"]["strategy"] == schema["definitions"]["fields"]["properties"]["strategy"]["default"]
    assert declarations["2001"]["no_answer"] == {"voicemail": "2001"}
    assert declarations["2002"]["no_answer"] == {"voicemail": "2002"}


def test_bad_default_is_reported_once_as_followme_defaults(check, schema):
    _, errors = check({"2001": GOOD, "2002": GOOD}, followme_defaults={"ring_time": 99, "lst": []})
    accepted = ", ".join(sorted(schema["definitions"]["fields"]["properties"]))  # the fields grow (issue 9)
    assert errors[0] == "pbx1: followme_defaults.lst = []: unknown field 'lst'; did you mean 'list'? Accepted: " \
        + accepted
    assert errors[1].startswith("pbx1: followme_defaults.ring_time = 99: must be at most 60")
    assert len(errors) == 2


# -- cross-checks -------------------------------------------------------------------------------

def test_no_answer_loop_is_an_error(check):
    _, errors = check({
        "2001": {**GOOD, "no_answer": {"extension": "2002"}},
        "2002": {"list": ["2003"], "no_answer": {"extension": "2003"}},
        "2003": {"list": ["2004"], "no_answer": {"extension": "2001"}},
        "2005": {"list": ["2004"], "no_answer": {"extension": "2001"}},  # leads into the loop; not part of it
    })
    assert errors == ['pbx1: extension 2001: no_answer.extension = "2002": no_answer chain loops back: '
                      "2001 -> 2002 -> 2003 -> 2001. Accepted: a chain that ends (voicemail, hangup, goto elsewhere, "
                      "or an extension without an enabled follow-me)"]


def test_self_loop_is_an_error(check):
    _, errors = check({"2001": {**GOOD, "no_answer": {"extension": "2001"}}})
    assert len(errors) == 1 and "2001 -> 2001" in errors[0]


def test_chain_through_a_disabled_declaration_ends(check):
    _, errors = check({
        "2001": {**GOOD, "no_answer": {"extension": "2002"}},
        "2002": {"list": ["2003"], "enabled": False, "no_answer": {"extension": "2001"}},
    })
    assert errors == []


def test_known_extensions(check):
    _, errors = check(
        {"2001": {**GOOD, "no_answer": {"extension": "2009"}}, "2077": {"list": ["2001"]}},
        followme_known_extensions=["2001", "2002"],
    )
    assert errors == [
        'pbx1: extension 2001: no_answer.extension = "2009": not in followme_known_extensions',
        'pbx1: extension 2077: (extension key) = "2077": not in followme_known_extensions',
    ]
    _, errors = check({"2001": GOOD}, followme_known_extensions=["2001", "2002"])
    assert errors == []


def test_default_deny_blocks_international_and_premium(check):
    _, errors = check({"2001": {"list": ["900441234567#", "+441234567#", "919005551234#", "909121234567#",
                                         "920045678#", "02155556666#"]}})
    blocked = sorted({error.split(" = ")[0] for error in errors})
    assert blocked == ["pbx1: extension 2001: list[0]", "pbx1: extension 2001: list[1]",
                       "pbx1: extension 2001: list[2]"]
    assert "toll-fraud policy" in errors[0]


def test_allow_list_and_custom_deny(check):
    _, errors = check({"2001": {"list": ["+989121234567#", "909121234567#"]}},
                      followme_external_allow=["^(909[0-9]{9}|\\+98[0-9]{10})#$"], followme_external_deny=[])
    assert errors == []
    _, errors = check({"2001": {"list": ["902155556666#"]}}, followme_external_allow=["^909[0-9]{9}#$"])
    assert errors == ['pbx1: extension 2001: list[0] = "902155556666#": external number matches none of '
                      "followme_external_allow: '^909[0-9]{9}#$'"]
    _, errors = check({"2001": GOOD}, followme_external_deny=["^9091"])
    assert len(errors) == 1 and "followme_external_deny pattern '^9091'" in errors[0]


def test_bad_policy_values(check):
    _, errors = check({"2001": GOOD}, followme_external_deny=["("], followme_known_extensions=["x"])
    assert any(e.startswith('pbx1: followme_external_deny[0] = "(": not a valid regular expression') for e in errors)
    assert any(e.startswith('pbx1: followme_known_extensions[0] = "x"') for e in errors)


def test_every_error_of_every_host_in_one_run(schema):
    _, errors = check_hosts(schema, {
        "pbx-a": {"followme": {"2001": {**GOOD, "ring_time": 0}, "2002": {"list": ["2003"], "x": 1}}},
        "pbx-b": {"followme": {"3001": {"list": ["+1234#"]}}},
        "pbx-c": {"followme": {"4001": GOOD}},
    })
    assert [(e.host, e.extension, e.path) for e in errors] == [
        ("pbx-a", "2001", "ring_time"), ("pbx-a", "2002", "x"), ("pbx-b", "3001", "list[0]")]


def test_an_error_in_one_field_does_not_hide_cross_check_errors_in_others(check):
    _, errors = check({
        "2001": {"list": ["2002", "900441234567#"], "ring_time": "10", "no_answer": {"extension": "2002"}},
        "2002": {"list": ["2003"], "strategy": "x", "no_answer": {"extension": "2001"}},
    })
    assert [error.split(":")[1:3] for error in errors] == [
        [" extension 2001", " list[1] = \"900441234567#\""],
        [" extension 2001", " no_answer.extension = \"2002\""],
        [" extension 2001", " ring_time = \"10\""],
        [" extension 2002", " strategy = \"x\""],
    ]


# -- the toll-fraud policy covers every way a declaration can make Asterisk dial ---------------------

def _target(no_answer, **policy):
    return {"followme": {"2001": {**GOOD, "no_answer": no_answer}, "2002": {"list": ["2003"]}}, **policy}


@pytest.mark.parametrize("no_answer", [
    {"extension": "900442071234567"},                                       # 9 + 00 + UK: the issue's example
    {"extension": "901144207123456"},                                       # NANP international access 011
    {"goto": {"context": "from-internal", "extension": "900442071234567"}},  # into the outbound routes
    {"goto": {"context": "ivr", "extension": "+442071234567"}},             # any context may dial out
    {"goto": {"context": "ivr", "extension": "9*00442071234567"}},          # * an outbound route may ignore
    {"goto": {"context": "ivr", "extension": "90*0442071234567"}},
    {"goto": {"context": "ivr", "extension": "9+00442071234567"}},
    {"goto": {"context": "ivr", "extension": "9#00442071234567"}},
    {"goto": {"context": "ivr", "extension": "919005551234"}},              # NANP premium 1-900
])
def test_no_answer_targets_pass_the_deny_list(checker, no_answer):
    errors = [str(error) for error in checker.check("pbx1", _target(no_answer)).errors]
    assert len(errors) == 1, errors
    assert "blocked by followme_external_deny pattern" in errors[0] and "toll-fraud policy" in errors[0]
    assert errors[0].startswith("pbx1: extension 2001: no_answer.")


@pytest.mark.parametrize("no_answer", [
    {"extension": "2002"},                                       # declared
    {"extension": "2900"},                                       # undeclared, as long as the declared ones
    {"goto": {"context": "ivr", "extension": "s"}},
    {"goto": {"context": "ivr", "extension": "*98"}},
    {"goto": {"context": "from-internal", "extension": "2009", "priority": 2}},
    {"goto": {"context": "ivr", "extension": "909121234567"}},   # national mobile behind prefix 9
])
def test_ordinary_no_answer_targets_pass(checker, no_answer):
    assert checker.check("pbx1", _target(no_answer)).errors == []


def test_allow_list_applies_to_numeric_targets_that_are_not_internal(checker):
    allow = {"followme_external_allow": ["^909[0-9]{9}#$"]}
    assert checker.check("pbx1", _target({"goto": {"context": "ivr", "extension": "s"}}, **allow)).errors == []
    assert checker.check("pbx1", _target({"extension": "2002"}, **allow)).errors == []
    assert checker.check("pbx1", _target({"extension": "909121234567"}, **allow)).errors == []
    errors = [str(e) for e in checker.check("pbx1", _target({"goto": {"context": "x", "extension": "*98"}},
                                                                     **allow)).errors]
    assert errors == ['pbx1: extension 2001: no_answer.goto.extension = "*98": matches none of '
                      "followme_external_allow: '^909[0-9]{9}#$' (neither a declared extension nor as long as one, "
                      "so it may be dialed out; matched as *98#; an internal extension is listed in "
                      "followme_known_extensions)"]


def test_known_extensions_decide_what_is_internal(checker):
    known = {"followme_known_extensions": ["2001", "2002", "2003", "1900"]}
    assert checker.check("pbx1", _target({"goto": {"context": "ivr", "extension": "1900"}}, **known)).errors == []
    errors = [str(e) for e in checker.check("pbx1", _target({"goto": {"context": "ivr", "extension": "2900"}},
                                                                     **known)).errors]
    assert len(errors) == 1 and "no_answer.goto.extension = \"2900\": blocked by" in errors[0]
    assert "not in followme_known_extensions, so it may be dialed out" in errors[0]


@pytest.mark.parametrize(("context", "own"), [
    ("followme", "followme"), ("followme-leg", "followme"), ("followme-call", "followme"),
    ("followme-revision", "followme"), ("FOLLOWME-Leg", "followme"), ("fm-leg", "fm"), ("fm", "fm"),
])
def test_goto_into_the_roles_own_contexts_is_refused(checker, context, own):
    errors = [str(e) for e in checker.check("pbx1", {**_target({"goto": {"context": context, "extension": "2002"}}),
                                                      "followme_context": own}).errors]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f'pbx1: extension 2001: no_answer.goto.context = "{context}": the role\'s own '
                                f"contexts ({own} and {own}-*) are no no_answer destination")


def test_goto_into_another_context_named_alike_is_fine(checker):
    for context in ("followmex", "my-followme-leg", "followme_leg"):
        assert checker.check("pbx1", _target({"goto": {"context": context, "extension": "s"}})).errors == []


@pytest.mark.parametrize("entry", ["9*00441234567#", "90*0441234567#", "9**00441234567#", "*900441234567#",
                                   "9011441234567#", "011441234567#", "+441234567#", "90*11441234567#"])
def test_deny_list_cannot_be_slipped_past(check, entry):
    _, errors = check({"2001": {"list": [entry]}})
    assert len(errors) == 1 and "external number blocked by followme_external_deny" in errors[0], errors


def test_a_stripped_match_says_so(check):
    _, errors = check({"2001": {"list": ["9*00441234567#"]}})
    assert errors == ['pbx1: extension 2001: list[0] = "9*00441234567#": external number blocked by '
                      "followme_external_deny pattern '^[0-9*]?00' (toll-fraud policy; matched as 900441234567#: "
                      "*, + and inner # removed, as an outbound route may ignore them)"]


@pytest.mark.parametrize("entry", ["909121234567#", "902155556666#", "09121234567#", "9*31#", "*31#",
                                   "912125551234#", "18005551234#", "918005551234#"])
def test_national_numbers_pass_the_default_deny_list(check, entry):
    _, errors = check({"2001": {"list": [entry]}})
    assert errors == []


def test_chain_through_followme_extension_context_is_a_loop(checker):
    result = checker.check("pbx1", {"followme": {
        "2001": {**GOOD, "no_answer": {"goto": {"context": "from-internal", "extension": "2002"}}},
        "2002": {"list": ["2003"], "no_answer": {"extension": "2001"}},
    }})
    assert [str(e) for e in result.errors] == [
        'pbx1: extension 2001: no_answer.goto.extension = "2002": no_answer chain loops back: 2001 -> 2002 -> 2001. '
        "Accepted: a chain that ends (voicemail, hangup, goto elsewhere, or an extension without an enabled "
        "follow-me)"]
    # Through a site's own extension context, case as Asterisk matches it.
    result = checker.check("pbx1", {"followme_extension_context": "internal", "followme": {
        "2001": {**GOOD, "no_answer": {"goto": {"context": "Internal", "extension": "2001", "priority": 3}}}}})
    assert len(result.errors) == 1 and "2001 -> 2001" in result.errors[0].message
    # A goto elsewhere ends the chain.
    result = checker.check("pbx1", {"followme": {
        "2001": {**GOOD, "no_answer": {"goto": {"context": "ivr", "extension": "2001"}}}}})
    assert result.errors == []


def test_an_internal_entry_that_looks_external_gets_a_warning(checker):
    result = checker.check("pbx1", {"followme": {"2001": {"list": ["2002", "09121234567"]},
                                                 "2002": {"list": ["2003", "902155556666#"]}}})
    assert result.errors == []
    assert [str(w) for w in result.warnings] == [
        'pbx1: extension 2001: list[1] = "09121234567": does not look like one of this site\'s extensions (longer '
        "than every declared one, 4 digits): it rings device PJSIP/09121234567, which probably does not exist. An "
        "outside number is written <outbound prefix><number>#, likely 909121234567#; an extension, listed in "
        "followme_known_extensions, silences this warning"]
    # No outbound prefix on this site: its external entries start like the number itself.
    result = checker.check("pbx1", {"followme": {"2001": {"list": ["09121234567", "02155556666#"]}}})
    assert "likely 09121234567#" in result.warnings[0].message
    # Listed as a known extension, or as long as a declared one: no warning.
    assert checker.check("pbx1", {"followme": {"2001": {"list": ["09121234567"]}},
                                  "followme_known_extensions": ["2001", "09121234567"]}).warnings == []
    assert checker.check("pbx1", {"followme": {"2001": {"list": ["2999"]}}}).warnings == []


# -- messages ------------------------------------------------------------------------------------

def test_every_unknown_field_is_reported(check):
    _, errors = check(one(ringtime=5, stratgy="hunt", colour="red"))
    assert [error.split(" = ")[0] for error in errors] == [
        "pbx1: extension 2001: colour", "pbx1: extension 2001: ringtime", "pbx1: extension 2001: stratgy"]
    assert "did you mean 'ring_time'?" in errors[1] and "did you mean 'strategy'?" in errors[2]


@pytest.mark.parametrize(("value", "hint"), [
    ("hunts", "hunt"), ("RINGALL", "ringall"), ("ringall_prim", "ringall-prim"), ("memory-hunt", "memoryhunt"),
    ("ringallv2prim", "ringallv2-prim")])
def test_a_wrong_enum_value_gets_a_did_you_mean(check, value, hint):
    _, errors = check(one(strategy=value))
    assert len(errors) == 1 and errors[0].endswith(f"; did you mean {hint!r}?"), errors


def test_list_in_followme_defaults_is_an_error(check):
    _, errors = check({"2001": GOOD}, followme_defaults={"list": ["2002"], "ring_time": 9})
    assert errors == ['pbx1: followme_defaults.list = ["2002"]: list is never taken from followme_defaults: '
                      "every declaration has its own list."]


# -- issue 9: new fields ----------------------------------------------------------------------------

ISSUE9_GOOD = [
    ("confirm_prompt", "followme/call-from"),
    ("confirm_prompt", None),
    ("too_late_prompt", "custom/sorry_taken"),
    ("too_late_prompt", None),
    ("external_cid_mode", "default"),
    ("external_cid_mode", "dialed"),
    ("external_cid_number", "+982112345678"),
    ("external_cid_number", "02155501234"),
    ("external_cid_number", None),
    ("list", [{"number": "2002", "delay": 2, "ring_time": 5}, "909121234567#"]),
    ("list", [{"number": "909121234567#"}, {"number": "2003", "ring_time": 60}]),
]

ISSUE9_BAD = [
    ("confirm_prompt", "", "Sound file an external leg hears"),
    ("confirm_prompt", "../etc/passwd", "Sound file an external leg hears"),
    ("confirm_prompt", "custom/x,y", "Sound file an external leg hears"),
    ("confirm_prompt", "a)b", "Sound file an external leg hears"),
    ("confirm_prompt", 5, "must be a string or null"),
    ("too_late_prompt", "x;y", "Sound file an external leg hears when it accepts"),
    ("too_late_prompt", "a/b/c/d/e/f/g", "Sound file an external leg hears when it accepts"),
    ("too_late_prompt", "${EXTEN}", "Sound file an external leg hears when it accepts"),
    ("too_late_prompt", True, "must be a string or null"),
    ("external_cid_mode", "fixd", "must be one of: default, fixed, outside_fixed, dialed, force_dialed"),
    ("external_cid_mode", None, "must be a string"),
    ("external_cid_number", "0215550123#", "The number of external_cid_mode"),
    ("external_cid_number", "++49", "The number of external_cid_mode"),
    ("external_cid_number", "49 30", "The number of external_cid_mode"),
    ("external_cid_number", "1" * 21, "The number of external_cid_mode"),
    ("external_cid_number", "2001\n", "The number of external_cid_mode"),
    ("external_cid_number", 4930, "must be a string or null"),
    ("list[0].delay", [{"number": "2002", "delay": -1}], "at least 0"),
    ("list[0].delay", [{"number": "2002", "delay": 61}], "at most 60"),
    ("list[0].delay", [{"number": "2002", "delay": "2"}], "must be an integer"),
    ("list[0].ring_time", [{"number": "2002", "ring_time": 0}], "at least 1"),
    ("list[0].ring_time", [{"number": "2002", "ring_time": 2.0}], "must be an integer"),
    ("list[0].number", [{"number": "20a2"}], "internal extension"),
    ("list[0].number", [{"number": "2002&PJSIP/9"}], "internal extension"),
    ("list[0]", [{"delay": 1}], "missing required field 'number'"),
    ("list[0].rings", [{"number": "2002", "rings": 1}], "unknown field 'rings'"),
    ("list[0]", [True], "must be a string or a mapping"),
]


@pytest.mark.parametrize(("field", "value"), ISSUE9_GOOD)
def test_issue9_good_values_pass(check, field, value):
    declarations, errors = check(one(**{field: value}))
    assert errors == []
    assert declarations["2001"][field] == value


@pytest.mark.parametrize(("field", "value", "says"), ISSUE9_BAD)
def test_issue9_bad_values_are_named(check, field, value, says):
    _, errors = check(one(**{field.split("[")[0]: value}))
    assert errors and all(e.startswith(f"pbx1: extension 2001: {field} = ") for e in errors), errors
    assert says in "\n".join(errors), errors


@pytest.mark.parametrize(("field", "value", "says"), [bad for bad in ISSUE9_BAD if not bad[0].startswith("list")])
def test_issue9_bad_values_in_followme_defaults_are_named(check, field, value, says):
    _, errors = check(one(), followme_defaults={field.split("[")[0]: value})
    assert errors and all(e.startswith(f"pbx1: followme_defaults.{field} = ") for e in errors), errors
    assert says in "\n".join(errors), errors


@pytest.mark.parametrize("mode", ["fixed", "outside_fixed", "force_dialed"])
def test_external_cid_modes_that_send_a_number_need_one(check, mode):
    _, errors = check(one(external_cid_mode=mode))
    assert errors == [f"pbx1: extension 2001: external_cid_number = null: external_cid_mode {mode} sends this "
                      "number, but none is set (here or in followme_defaults). Accepted: 1 to 20 digits, one "
                      "optional leading +"]
    _, errors = check(one(external_cid_mode=mode), followme_defaults={"external_cid_number": "+4930123"})
    assert errors == []


def test_external_cid_dialed_needs_no_number(check):
    assert check(one(external_cid_mode="dialed"))[1] == []


def test_timed_entry_given_twice_is_an_error(check):
    _, errors = check(one(list=["2002", {"number": "2002", "delay": 1}]))
    assert errors == ['pbx1: extension 2001: list[1] = {"delay": 1, "number": "2002"}: entry 2002 appears twice '
                      "(also list[0]). Accepted: each number once, plain or with its own timing"]


@pytest.mark.parametrize("strategy", ["ringall", "ringallv2-prim", "memoryhunt"])
def test_timed_entry_joining_after_its_step_is_an_error(check, strategy):
    _, errors = check(one(strategy=strategy, ring_time=5, list=[{"number": "2002", "delay": 5}]))
    assert errors == [f"pbx1: extension 2001: list[0].delay = 5: with strategy {strategy} the entry would join "
                      "after its step of ring_time 5 s ended. Accepted: a delay shorter than ring_time"]
    assert check(one(strategy="hunt", ring_time=5, list=[{"number": "2002", "delay": 5}]))[1] == []


def test_toll_fraud_policy_covers_timed_entries(check):
    _, errors = check(one(list=[{"number": "900123#", "delay": 1}, {"number": "00491234#"}]))
    assert [e.split(": external")[0] for e in errors] == ['pbx1: extension 2001: list[0] = "900123#"',
                                                         'pbx1: extension 2001: list[1] = "00491234#"']
    assert all("blocked by followme_external_deny" in e for e in errors), errors
    _, errors = check(one(list=[{"number": "8123#"}]), followme_external_allow=["^9"])
    assert errors == ["pbx1: extension 2001: list[0] = \"8123#\": external number matches none of "
                      "followme_external_allow: '^9'"]


def test_known_extensions_cover_timed_entries(check):
    _, errors = check(one(list=[{"number": "2999"}]), followme_known_extensions=["2001"])
    assert errors == ["pbx1: extension 2001: list[0] = \"2999\": not in followme_known_extensions"]


SCHEDULE = {"ranges": [{"times": "09:00-17:00", "weekdays": "mon-fri"}]}


@pytest.mark.parametrize("schedule", [
    SCHEDULE,
    {"active": "outside", "timezone": "Asia/Tehran", "ranges": [{"times": "22:00-06:00"}, {"weekdays": "sat-sun"}]},
    {"ranges": [{"days": "24-26", "months": "dec"}, {"days": "1", "months": "jan"}, {}]},
    {"ranges": [{"days": "30-2", "months": "feb"}]},  # wraps: 1 and 2 feb
    None,
])
def test_good_schedules_pass(check, schedule):
    declarations, errors = check(one(schedule=schedule))
    assert errors == []
    assert declarations["2001"]["schedule"] == schedule


@pytest.mark.parametrize(("schedule", "path", "says"), [
    ({"ranges": []}, "schedule.ranges", "must have at least 1 entries"),
    ({}, "schedule", "missing required field 'ranges'"),
    ({"ranges": [{"times": "9:00-17:00"}]}, "schedule.ranges[0].times", "Times of day HH:MM-HH:MM"),
    ({"ranges": [{"times": "09:00-24:00"}]}, "schedule.ranges[0].times", "Times of day"),
    ({"ranges": [{"times": "09:00"}]}, "schedule.ranges[0].times", "Times of day"),
    ({"ranges": [{"weekdays": "monday"}]}, "schedule.ranges[0].weekdays", "Weekdays: mon..sun"),
    ({"ranges": [{"weekdays": "mon,fri"}]}, "schedule.ranges[0].weekdays", "Weekdays"),
    ({"ranges": [{"days": "0"}]}, "schedule.ranges[0].days", "Days of the month"),
    ({"ranges": [{"days": "1-32"}]}, "schedule.ranges[0].days", "Days of the month"),
    ({"ranges": [{"months": "june"}]}, "schedule.ranges[0].months", "Months: jan..dec"),
    ({"ranges": [{"month": "jun"}]}, "schedule.ranges[0].month", "unknown field 'month'; did you mean 'months'?"),
    ({"ranges": [{"days": "31", "months": "feb"}]}, "schedule.ranges[0].days", "feb has no day 31"),
    ({"ranges": [{"days": "31", "months": "apr"}]}, "schedule.ranges[0].days", "apr has no day 31"),
    ({"active": "during", "ranges": [{}]}, "schedule.active", "must be one of: inside, outside"),
    ({"timezone": "Mars/Olympus", "ranges": [{}]}, "schedule.timezone", "unknown time zone"),
    ({"timezone": "../etc/passwd", "ranges": [{}]}, "schedule.timezone", "IANA time zone the ranges are read in"),
    ({"timezone": "UTC,1", "ranges": [{}]}, "schedule.timezone", "IANA time zone"),
    ("always", "schedule", "must be a mapping or null"),
])
def test_bad_schedules_are_named(check, schedule, path, says):
    _, errors = check(one(schedule=schedule))
    assert errors and all(e.startswith(f"pbx1: extension 2001: {path} = ") for e in errors), errors
    assert says in "\n".join(errors), errors
