"""behaviour.py: two revisions' complete declarations -> the Markdown of a merge request's plan."""

import pathlib
import re

import pytest
import yaml
from ansible_collections.followme.asterisk.plugins.module_utils.plan import STRATEGIES, build_plan
from ansible_collections.followme.asterisk.plugins.plugin_utils.behaviour import (
    MAX_DIAGRAMS,
    SETTINGS,
    HostState,
    Revision,
    code,
    code_block,
    compare_host,
    extension_ranges,
    gantt,
    list_words,
    mermaid_text,
    plan_markdown,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def state(checker):
    """state(followme=..., followme_host=..., **variables) -> HostState as the action plugin builds it."""

    def build(**variables):
        declarations, errors = checker.check_host("pbx1", variables)
        origins = {}
        for layer in ("followme", "followme_host"):
            origins.update((extension, (layer, None)) for extension in variables.get(layer, {}))
        return HostState(declarations, origins, [(error.extension, str(error)) for error in errors],
                         variables.get("followme_defaults", {}))

    return build


def test_the_issue_example_in_words(state):
    old = state(followme={"2001": {"list": ["2001", "2002", "909121234567#"], "initial_ring_time": 7}})
    new = state(followme={"2001": {"list": ["2001", "2002", "2003"], "initial_ring_time": 5,
                                   "no_answer": {"extension": "2002"}}})
    assert compare_host(old, new).changed == {"2001": [
        "initial ring 7 s → 5 s", "list + 2003, − 909121234567#", "no answer: voicemail 2001 → extension 2002"]}


@pytest.mark.parametrize(("field", "old", "new", "words"), [
    ("strategy", "hunt", "ringall-prim", "strategy hunt → ringall-prim"),
    ("ring_time", 20, 45, "ring time 20 s → 45 s"),
    ("confirm_calls", False, True, "confirm calls off → on"),
    ("cid_name_prefix", None, "FM ", 'caller-ID prefix none → `"FM "`'),
    ("alert_info", "<http://a>;info=x", None, 'alert-info `"<http://a>;info=x"` → none'),
    ("music_on_hold", None, "jazz", 'music on hold none (ringing) → `"jazz"`'),
    ("announcement", "custom/a", "custom/b", 'announcement `"custom/a"` → `"custom/b"`'),
    ("no_answer", "hangup", {"goto": {"context": "c", "extension": "s"}}, "no answer: hang up → go to c,s,1"),
    ("enabled", False, True, "enabled"),
])
def test_each_field_in_words(state, field, old, new, words):
    base = state(followme={"2001": {"list": ["2002"], field: old}})
    head = state(followme={"2001": {"list": ["2002"], field: new}})
    assert compare_host(base, head).changed == {"2001": [words]}


def test_disabling_is_said_alone_and_changes_while_disabled_are_none(state):
    on = state(followme={"2001": {"list": ["2002"]}})
    off = state(followme={"2001": {"list": ["2003"], "ring_time": 9, "enabled": False}})
    off_again = state(followme={"2001": {"list": ["2004"], "enabled": False}})
    assert compare_host(on, off).changed == {"2001": ["disabled: calls get the site's normal handling"]}
    assert compare_host(off, off_again).count == 0
    assert compare_host(off, on).changed["2001"][0] == "enabled"


@pytest.mark.parametrize(("old", "new", "words"), [
    (["1", "2"], ["1", "2", "3"], "+ 3"),
    (["1", "2", "3"], ["1", "3"], "− 2"),
    (["1", "2", "3"], ["3", "1", "2"], "order changed, now 3, 1, 2"),
    (["1", "2"], ["3", "1", "2"], "+ 3, now 3, 1, 2"),  # where an added entry rings matters to a hunt
    (["1", "2"], ["2", "4"], "+ 4, − 1"),
])
def test_list_words(old, new, words):
    assert list_words(old, new) == words


def test_added_removed_and_layer_moves(state):
    base = state(followme={"2001": {"list": ["2002"]}, "2003": {"list": ["2004"]}})
    head = state(followme={"2001": {"list": ["2002"]}, "2005": {"list": ["2006"]}},
                 followme_host={"2001": {"list": ["2002"]}})
    changes = compare_host(base, head)
    assert (changes.added, changes.removed) == (["2005"], ["2003"])
    assert changes.changed == {"2001": ["now declared in `followme_host` instead of `followme` (same behaviour)"]}


def test_a_changed_default_changes_the_extensions_that_take_it_and_is_said_once(state):
    base = state(followme={f"{n}": {"list": ["9000"]} for n in range(2001, 2301)} | {"3000": {"list": ["1"],
                                                                                            "ring_time": 9}},
                 followme_defaults={"ring_time": 20})
    head = state(followme={f"{n}": {"list": ["9000"]} for n in range(2001, 2301)} | {"3000": {"list": ["1"],
                                                                                            "ring_time": 9}},
                 followme_defaults={"ring_time": 25})
    markdown = plan_markdown(Revision("main", {"pbx1": base}), Revision("work tree", {"pbx1": head}))
    assert "- `followme_defaults`: ring time 20 s → 25 s\n" in markdown
    # 300 extensions with the same change: one line, the extensions as a range.
    assert "- **2001–2300** (300 extensions) (`followme`, group_vars): ring time 20 s → 25 s\n" in markdown
    assert "3000" not in markdown
    assert markdown.count("```mermaid") == MAX_DIAGRAMS
    assert f"{300 - MAX_DIAGRAMS} more timelines not drawn (at most {MAX_DIAGRAMS} per plan)" in markdown
    assert len(markdown) < 65536  # GitHub's limit for one comment


def test_many_different_changes_are_folded(state):
    base = state(followme={f"{n}": {"list": ["9000"]} for n in range(2001, 2301)})
    head = state(followme={f"{n}": {"list": ["9000", str(n + 5000)]} for n in range(2001, 2301)})
    markdown = plan_markdown(Revision("main", {"pbx1": base}), Revision("work tree", {"pbx1": head}))
    assert "<details><summary>300 changed extensions</summary>\n\n- **2001** (`followme`, group_vars): list + 7001" \
        in markdown
    assert markdown.count("```mermaid") == MAX_DIAGRAMS
    assert len(markdown) < 65536


def test_unchanged_hosts_are_one_line_and_hosts_come_and_go(state):
    same = state(followme={"2001": {"list": ["2002"]}})
    markdown = plan_markdown(Revision("main", {"a": same, "b": same, "gone": same}),
                             Revision("mr", {"a": same, "b": same, "new": same}))
    assert "Hosts of group `pbx`: 1 added, 1 removed, 2 unchanged." in markdown
    assert "Unchanged: `a`, `b`." in markdown
    assert "### `new`: new host, 1 extension\n" in markdown
    assert "### `gone`: host removed\n" in markdown
    assert re.findall(r"^### ", markdown, re.M) == ["### ", "### "]


def test_settings_are_role_variables():
    with open(ROOT / "roles" / "followme" / "defaults" / "main.yml", encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    assert set(SETTINGS) <= set(defaults)


def test_no_change_at_all():
    markdown = plan_markdown(Revision("main", {}), Revision("mr", {}))
    assert "No change to what callers experience." in markdown


def test_errors_of_head_and_base(state):
    good = state(followme={"2001": {"list": ["2002"]}, "2002": {"list": ["2003"]}})
    bad = state(followme={"2001": {"list": ["2002"], "ring_time": "10"}, "2002": {"list": ["2003"]}})
    markdown = plan_markdown(Revision("main", {"pbx1": good}), Revision("mr", {"pbx1": bad}))
    assert "### `pbx1`: ❌ 1 validation error" in markdown
    assert 'pbx1: extension 2001: ring_time = "10": must be an integer, not a string' in markdown
    assert "**❌ The head revision does not validate: it cannot be deployed as it is.**" in markdown
    fixed = compare_host(bad, good)
    assert fixed.changed == {"2001": ["was invalid in the base revision"]} and not fixed.removed
    markdown = plan_markdown(Revision("main", {"pbx1": bad}), Revision("mr", {"pbx1": good}))
    assert "⚠️ The base revision had validation errors on this host" in markdown
    assert "❌" not in markdown


def test_values_cannot_inject_markup():
    assert code("a`b") == "``a`b``"
    assert code("`x`") == "`` `x` ``"
    assert code("<img src=x>\nfoo") == "`<img src=x> foo`"
    block = code_block(["```", "<script>"])
    assert block.startswith("````text\n") and block.endswith("\n````")
    markdown = plan_markdown(Revision("main", {}), Revision("mr", {"<b>x</b>": HostState(errors=[("", "```\n@all")])}))
    assert "### `<b>x</b>`" in markdown and "````text\n```\n@all\n````" in markdown


def test_extension_ranges():
    assert extension_ranges(["2003", "2001", "2002", "2010", "2011", "30", "031", "032"]) == \
        "30, 031, 032, 2001–2003, 2010, 2011"


def test_mermaid_text_keeps_mermaid_tokens_out():
    assert mermaid_text("go to a,*7#,1: x;y 50%") == "go to a,*7＃,1： x；y 50％"


DECLARATION = {"list": ["2001", "2002", "909121234567#"], "initial_ring_time": 7, "ring_time": 20,
               "no_answer": {"voicemail": "2001"}, "enabled": True, "confirm_calls": False, "cid_name_prefix": None,
               "alert_info": None, "music_on_hold": None, "announcement": None}


def parse_gantt(text):
    """The structure of a Gantt chart as Mermaid's grammar reads it: header, sections and their bars."""
    lines = text.splitlines()
    assert lines[0] == "gantt"
    header = {}
    sections, bars = [], []
    for indented in lines[1:]:
        assert indented.startswith("    ") and indented == indented.rstrip(), indented
        line = indented.strip()
        keyword, _, rest = line.partition(" ")
        if keyword in ("title", "dateFormat", "axisFormat", "todayMarker"):
            header[keyword] = rest
        elif keyword == "section":
            assert not re.search(r"[#:;%]", rest), rest
            sections.append(rest)
        else:
            name, data = line.split(" : ")
            assert not re.search(r"[#:;%]", name), name
            parts = data.split(", ")
            milestone = parts[0] == "milestone"
            start, end = parts[-2:]
            for clock in (start, end):
                assert re.fullmatch(r"\d\d:[0-5]\d:[0-5]\d", clock), clock
            seconds = [sum(int(p) * 60 ** (2 - i) for i, p in enumerate(c.split(":"))) for c in (start, end)]
            bars.append((sections[-1], name, *seconds, milestone))
    return header, bars


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gantt_is_the_timeline(strategy):
    declaration = {**DECLARATION, "strategy": strategy}
    header, bars = parse_gantt(gantt("2001", declaration))
    assert header == {"title": f"2001, nobody answers ({strategy})", "dateFormat": "HH:mm:ss",
                      "axisFormat": "%M:%S", "todayMarker": "off"}
    rings, end = build_plan("2001", declaration).timeline()
    names = {"909121234567#": "909121234567 (external)"}
    legs = list(dict.fromkeys(ring.entry for ring in rings))  # one section per leg, in the order they first ring
    assert [bar[:4] for bar in bars[:-1]] == [(names.get(leg, leg), f"{ring.start}–{ring.end} s", ring.start, ring.end)
                                              for leg in legs for ring in rings if ring.entry == leg]
    assert all(not bar[4] for bar in bars[:-1])
    assert bars[-1] == ("no answer", f"voicemail 2001 at {end} s", end, end, True)


def test_gantt_goes_past_a_minute():
    declaration = {**DECLARATION, "strategy": "hunt", "ring_time": 60, "list": [str(n) for n in range(3001, 3021)]}
    _, bars = parse_gantt(gantt("2001", declaration))
    assert bars[-1] == ("no answer", "voicemail 2001 at 1207 s", 1207, 1207, True)
    assert "00:20:07" in gantt("2001", declaration)
