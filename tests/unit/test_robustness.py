"""No traceback and no exponential time on any input (issue 11, item 9): deep nesting, alias bombs, catastrophic
or huge regular expressions, odd types; and how values are read back from the files Ansible loaded them from."""

import datetime
import re
import string
import time

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible_collections.followme.asterisk.plugins.plugin_utils import variables
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    MAX_NODES,
    bounded_plain,
    deny_forms,
    regex_problem,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import (
    duplicate_keys,
    locate,
    origin_of,
    read_templated,
    written,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOOD = {"2001": {"list": ["2002"]}}


def deep(levels: int):
    value = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("where", ["list", "no_answer", "cid_name_prefix", "unknown_field"])
def test_very_deep_nesting_is_an_error_not_a_recursion_error(checker, where):
    result = checker.check("pbx1", {"followme": {"2001": {"list": ["2002"], where: deep(100_000)}}})
    messages = [str(error) for error in result.errors]
    assert any("is nested more than 32 levels deep" in message for message in messages), messages
    assert all(message.startswith("pbx1: extension 2001: ") for message in messages), messages


def test_deep_nesting_in_any_role_variable(checker):
    for name in ("followme_defaults", "followme_external_deny", "followme_context", "followme_x"):
        result = checker.check("pbx1", {"followme": GOOD, name: {"a": deep(50_000)}})
        assert result.errors and all("Traceback" not in str(error) for error in result.errors)


def test_an_alias_bomb_is_bounded(checker):
    """Shared references, as YAML aliases make them: 10**21 values if walked naively."""
    bomb = ["lol"] * 10
    for _ in range(20):
        bomb = [bomb] * 10
    start = time.perf_counter()
    result = checker.check("pbx1", {"followme": {"2001": {"list": bomb}}})
    assert time.perf_counter() - start < 10
    assert [str(error) for error in result.errors] == [
        f"pbx1: followme = (...): holds more than {MAX_NODES:,} values in all (a YAML alias bomb?): "
        "not checked further"]


def test_bounded_plain_keeps_order_types_and_shared_values():
    shared = {"b": 2}
    value = {"z": 1, "a": [True, None, 1.5, "s", shared], "m": shared, 3001: "int key", (1, 2): "tuple key"}
    copied, problems = bounded_plain(value, budget=[100])
    assert problems == []
    assert copied == {"z": 1, "a": [True, None, 1.5, "s", {"b": 2}], "m": {"b": 2}, 3001: "int key",
                      "(1, 2)": "tuple key"}
    assert list(copied) == ["z", "a", "m", 3001, "(1, 2)"]
    assert bounded_plain(value, budget=[3])[1][0][1].startswith("holds more than")


@pytest.mark.parametrize("variables", [
    {"followme": "2001"}, {"followme": []}, {"followme": None}, {"followme": {"2001": None}},
    {"followme": {"2001": []}}, {"followme": {"2001": {"list": None}}}, {"followme": {None: GOOD["2001"]}},
    {"followme": {True: GOOD["2001"]}}, {"followme": {1.5: GOOD["2001"]}}, {"followme": {(1, 2): GOOD["2001"]}},
    {"followme": GOOD, "followme_defaults": []}, {"followme": GOOD, "followme_defaults": "x"},
    {"followme": GOOD, "followme_known_extensions": "2001"}, {"followme": GOOD, "followme_external_deny": "x"},
    {"followme": GOOD, "followme_external_deny": [None, 1, ["x"]]},
    {"followme": GOOD, "followme_external_allow": ["x" * 10_000]},
    {"followme": {"2001": {"list": [datetime.date(2024, 1, 1), b"x", {1, 2}, object()]}}},
    {"followme": {"2001": {"list": ["2002"], "no_answer": {"goto": {"context": ["x"], "extension": {}}}}}},
    {"followme": {"2001": {"list": ["2002"], "no_answer": {"goto": None}}}},
    {"followme": {"2001": {"list": ["2002"], "enabled": "true", "no_answer": {"extension": "2001"}}}},
    {"followme": GOOD, "followme_host": {"2001": "x"}}, {"followme_host": GOOD},
    {"followme": GOOD, "followme_file_mode": float("nan")}, {"followme": GOOD, "followme_file_mode": 10**100},
    {"followme": {"2001": {"list": ["2002"] * 100_000}}},
])
def test_odd_shapes_and_types_are_errors_not_tracebacks(checker, variables):
    result = checker.check("pbx1", variables)
    for error in result.errors:
        assert str(error).startswith("pbx1: ")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)
NAMES = st.sampled_from(["followme", "followme_host", "followme_defaults", "followme_known_extensions",
                         "followme_external_allow", "followme_external_deny", "followme_context",
                         "followme_file_mode", "followme_confirm_timeout", "followme_device", "folowme"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variables=st.dictionaries(NAMES, JSONISH, max_size=4),
       declaration=st.dictionaries(st.sampled_from(["list", "strategy", "no_answer", "enabled", "ring_time", "x"]),
                                   JSONISH, max_size=4))
def test_any_value_gives_messages_not_exceptions(checker, variables, declaration):
    variables.setdefault("followme", {"2001": declaration})
    result = checker.check("pbx1", variables)
    assert all(str(error).startswith("pbx1: ") for error in result.errors + result.warnings)


# -- allow/deny patterns -----------------------------------------------------------------------

@pytest.mark.parametrize("pattern", [
    r"^(0+)+$", r"(0|00)+#", r"(.*)*#", r"^([0-9]+)*$", r"(a|a)*", r"((ab)*)+", r"(?:[0-9]*[0-9]*)+#",
    r"(?=(0+)+)", r"(0+){2,}", r"(0?){30}0{30}", r"a*b*c*d*#",
])
def test_patterns_that_could_take_exponential_time_are_refused(checker, pattern):
    errors = [str(e) for e in checker.check("pbx1", {"followme": GOOD, "followme_external_deny": [pattern]}).errors]
    assert len(errors) == 1, errors
    assert errors[0].startswith("pbx1: followme_external_deny[0] = ")
    assert "exponential time" in errors[0] or "repeats of variable length" in errors[0]


@pytest.mark.parametrize(("pattern", "says"), [
    ("(", "not a valid regular expression"), ("a{4294967296}", "not a valid regular expression"),
    ("a{99999999999999999999}", "not a valid regular expression"), (r"(a)\1", "back-references"),
    (r"(?P<x>a)(?(x)b|c)", "back-references"), ("[", "not a valid regular expression"),
])
def test_broken_or_huge_patterns_are_refused_without_traceback(checker, pattern, says):
    errors = [str(e) for e in checker.check("pbx1", {"followme": GOOD, "followme_external_allow": [pattern]}).errors]
    assert len(errors) == 1 and says in errors[0], errors


@pytest.mark.parametrize("pattern", [
    r"^\+", r"^[0-9*]?00", r"^[0-9*]?011", r"^[0-9*]?1?9(00|76)", r"^9(09[0-9]{9})#$",
    r"^(909[0-9]{9}|\+98[0-9]{10})#$", r"^9[2-8][0-9]{7}#$", r"^9?0[0-9]{9,10}#$", r"([0-9]{3}){1,4}#",
    r"^9[0-9]{65535}", r"^(?:00|011)",
])
def test_ordinary_patterns_are_accepted(pattern):
    assert regex_problem(pattern) is None


REGEX_PIECES = ["0", "9", "[0-9]", ".", r"\d", "*", "+", "?", "{2,5}", "{3}", "(", ")", "|", "(?:", "#", "^", "$",
                "[0-9*]", r"\+"]


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.sampled_from(REGEX_PIECES), min_size=1, max_size=14))
def test_an_accepted_pattern_matches_any_entry_fast(pieces):
    pattern = "".join(pieces)
    if regex_problem(pattern) is not None:
        return
    compiled = re.compile(pattern)
    for subject in ("0" * 40 + "!", "9" * 40 + "#", "09" * 20 + "x", "0" * 30 + "#", "+" + "0" * 39):
        for form in deny_forms(subject):
            start = time.perf_counter()
            compiled.search(form)
            assert time.perf_counter() - start < 0.05, (pattern, form)


def test_deny_forms():
    assert deny_forms("909121234567#") == ("909121234567#",)
    assert deny_forms("9*00441234#") == ("9*00441234#", "900441234#")
    assert deny_forms("9+0044") == ("9+0044#", "90044#")
    assert deny_forms("9#00#") == ("9#00#", "900#")


# -- reading values back from their files (ansible-core's loader, 2.17 or 2.19) -----------------------

def load(tmp_path, text, name="vars.yml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path), DataLoader().load_from_file(str(path))


def test_locate_names_file_line_and_column(tmp_path):
    path, data = load(tmp_path, 'followme:\n  "2001":\n    list: ["2002", "2003"]\n    ring_time: 0x10\n')
    value, origin = locate(data, ("followme", "2001", "list", 1))
    assert value == "2003" and origin == (path, 3, 20)
    value, origin = locate(data, ("followme", "2001", "ring_time"))
    assert value == 16
    if origin_of(value):  # ansible-core 2.19: numbers carry their origin, and are shown as written
        assert origin == (path, 4, 16)
        assert written(value, origin, {}) == "0x10"
    else:  # before 2.19: the mapping that holds them
        assert origin[0] == path
    assert locate(data, ("followme", "2009")) == (None, origin_of(data["followme"]))
    assert locate(data, ("nothing",)) == (None, None)


@pytest.mark.parametrize(("text", "shown"), [("0640", "0640"), ("0x1A0", "0x1A0"), ("1_000", "1_000"),
                                             ("+5", "+5"), ("416", None), ("7.0", None), ("0o640", None)])
def test_numbers_are_shown_as_written(tmp_path, text, shown):
    path, data = load(tmp_path, f"followme_file_mode: {text}  # comment\n")
    value = data["followme_file_mode"]
    origin = origin_of(value) or (path, 1, 21)  # before 2.19 numbers carry no origin: the test supplies it
    assert written(value, origin, {}) == shown


def test_duplicate_keys_are_found_in_the_watched_values_only(tmp_path):
    text = ("other:\n  a: 1\n  a: 2\n"
            "followme:\n  \"2001\":\n    list: [\"2002\"]\n    ring_time: 5\n    ring_time: 6\n"
            "  \"2001\": {list: [\"2003\"], strategy: hunt, strategy: ringall}\n"
            "  \"2002\": &d\n    list: [\"2004\"]\n  \"2003\": *d\n"
            "  \"2004\":\n    list: [{a: 1, a: 2}]\n"
            "  3001: {list: [\"1\"]}\n  \"3001\": {list: [\"2\"]}\n"
            "followme_context: a\nfollowme_context: b\n")
    path, data = load(tmp_path, text)
    found = duplicate_keys(path, {origin_of(data["followme"])[1:]: "followme"}, ["followme", "followme_context"])
    assert found == [
        (("followme", "2001", "ring_time"), "ring_time", 7, 8, 5),
        (("followme", "2001"), "2001", 5, 9, 3),
        (("followme", "2001", "strategy"), "strategy", 9, 9, 44),
        (("followme", "2004", "list", 0, "a"), "a", 14, 14, 19),
        (("followme_context",), "followme_context", 17, 18, 1),
    ]


def test_duplicate_keys_in_an_alias_bomb_file_take_linear_time(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    lines += ["followme:", '  "2001": {list: *a11, list: []}']
    path = tmp_path / "bomb.yml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    found = duplicate_keys(str(path), {(14, 3): "followme"}, ["followme"])
    assert time.perf_counter() - start < 1
    assert found == [(("followme", "2001", "list"), "list", 14, 14, 24)]


def test_duplicate_keys_answers_are_kept_for_the_same_bytes_only(tmp_path, monkeypatch):
    scans = []
    real = variables._scan
    monkeypatch.setattr(variables, "_scan", lambda *args: scans.append(1) or real(*args))
    path = tmp_path / "vars.yml"
    path.write_text("followme_context: a\nfollowme_context: b\n")
    expected = [(("followme_context",), "followme_context", 1, 2, 1)]
    assert duplicate_keys(str(path), {}, ["followme_context"]) == expected
    assert duplicate_keys(str(path), {}, ["followme_context"]) == expected and len(scans) == 1  # kept
    assert duplicate_keys(str(path), {}, ["followme_context", "followme"]) == expected and len(scans) == 2
    path.write_text("followme_context: a\nfollowme_context: c\n")  # same size, other bytes
    assert duplicate_keys(str(path), {}, ["followme_context"]) == expected and len(scans) == 3
    path.write_text("followme_context: a\n")
    assert duplicate_keys(str(path), {}, ["followme_context"]) == [] and len(scans) == 4
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))  # a file: no cache can be made there
    path.write_text("followme_context: a\nfollowme_context: b\n")
    assert duplicate_keys(str(path), {}, ["followme_context"]) == expected
    assert duplicate_keys(str(path), {}, ["followme_context"]) == expected and len(scans) == 6


def test_unreadable_or_broken_files_find_nothing(tmp_path):
    assert duplicate_keys(str(tmp_path / "missing.yml"), {}, ["followme"]) == []
    broken = tmp_path / "broken.yml"
    broken.write_text("followme: [\n  - {")
    assert duplicate_keys(str(broken), {}, ["followme"]) == []
    ini = tmp_path / "hosts.ini"
    ini.write_text("[pbx]\npbx1 followme_context=x\n")
    assert duplicate_keys(str(ini), {}, ["followme"]) == []


def test_templates_are_rendered_field_by_field(checker):
    def template(text):
        if "undefined" in text:
            raise ValueError("'undefined' is undefined\nmore detail")
        if "list" in text:
            return ["2002", "{{ not rendered again }}"]
        return text.replace("{{ prefix }}", "FM")

    task_vars = {"followme": {"2001": {"list": "{{ a list }}", "cid_name_prefix": "{{ prefix }} ",
                                       "alert_info": "{{ undefined }}"}}, "unrelated": "{{ x }}"}
    values, problems = read_templated(task_vars, ["followme"], template)
    assert values == {"followme": {"2001": {"list": ["2002", "{{ not rendered again }}"], "cid_name_prefix": "FM ",
                                            "alert_info": "{{ undefined }}"}}}
    assert problems == [(("followme", "2001", "alert_info"), "template error: 'undefined' is undefined")]
    found = [checker.problem("pbx1", location, message, "{{ undefined }}") for location, message in problems]
    result = checker.check("pbx1", values, problems=found)
    assert [str(error) for error in result.errors] == [
        "pbx1: extension 2001: alert_info = \"{{ undefined }}\": template error: 'undefined' is undefined",
        'pbx1: extension 2001: list[1] = "{{ not rendered again }}": not accepted. Accepted: An internal extension '
        "(1 to 15 digits) or an external number written <outbound prefix><number># (digits and *, one optional "
        "leading +, ending in #)."]


def test_random_text_never_breaks_the_duplicate_key_reader(tmp_path):
    alphabet = string.printable
    for seed in range(200):
        text = "".join(alphabet[(seed * 7919 + i * 104729) % len(alphabet)] for i in range(200))
        path = tmp_path / f"r{seed}.yml"
        path.write_text(text)
        assert isinstance(duplicate_keys(str(path), {(1, 1): "followme"}, ["followme"]), list)
