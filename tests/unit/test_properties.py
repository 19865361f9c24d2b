"""Property: a character outside a field's allowed set never passes, in any dial-string or free-text field."""

import re
import string

import pytest
from hypothesis import given, settings
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
