"""FreePBX keys -> declarations (plugin_utils/freepbx.py), the module's parsing, and the labels tables.

The import itself, over real SSH on a FreePBX-shaped lab PBX, is tests/test_import_freepbx.py.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.followme.asterisk.plugins.modules import followme_freepbx_facts
from ansible_collections.followme.asterisk.plugins.plugin_utils import freepbx
from compat import patch_module_args
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas/followme.schema.json").read_text())
FIELDS = SCHEMA["definitions"]["fields"]["properties"]


def keys_of(users: dict[str, dict[str, str]], followme: dict[str, dict[str, str]]) -> dict[str, str]:
    keys = {f"{user}/{key}": value for user, values in users.items() for key, value in values.items()}
    keys |= {f"{ext}/followme/{key}": value for ext, values in followme.items() for key, value in values.items()}
    return keys


USERS = {ext: {"voicemail": "default", "cidname": ext} for ext in ("2001", "2002", "2003", "105")}


def one(followme: dict[str, str], ext: str = "2001", users=None, **kwargs):
    """(declaration or None, [(key, outcome)]) of one extension."""
    result = freepbx.convert(keys_of(USERS if users is None else users, {ext: followme}), **kwargs)
    return result.declarations.get(ext), [(n.key, n.outcome) for n in result.notes]


BASE = {"ddial": "DIRECT", "grplist": "2002", "prering": "7", "strategy": "ringall", "grptime": "20",
        "postdest": "app-blackhole,hangup,1"}


# -- in step with the schema --------------------------------------------------------------------

def test_fields_and_strategies_are_the_schemas():
    assert list(freepbx.FIELDS) == list(FIELDS)
    assert list(freepbx.STRATEGIES) == FIELDS["strategy"]["enum"]


def _whole(pattern) -> str:
    """A pattern's text without the renderer's end anchor (the import matches whole strings either way)."""
    return pattern.pattern.removesuffix("\\Z")


@pytest.mark.parametrize(("pattern", "schema_pattern"), [
    (freepbx._EXTENSION, SCHEMA["definitions"]["extension"]["pattern"]),
    (freepbx._CID_PREFIX, FIELDS["cid_name_prefix"]["pattern"]),
    (freepbx._ALERT_INFO, FIELDS["alert_info"]["pattern"]),
    (freepbx._MOH, FIELDS["music_on_hold"]["pattern"]),
    (freepbx._SOUND, FIELDS["announcement"]["pattern"]),
])
def test_patterns_are_the_schemas(pattern, schema_pattern):
    assert "^" + _whole(pattern) + "$" == schema_pattern


def test_entry_and_goto_patterns_are_the_schemas():
    entry = SCHEMA["definitions"]["entry"]["pattern"]
    assert entry == f"^({freepbx._EXTENSION.pattern}|{freepbx._EXTERNAL.pattern})$"
    goto = SCHEMA["definitions"]["no_answer"]["oneOf"][3]["properties"]["goto"]["properties"]
    assert "^" + _whole(freepbx._CONTEXT) + "$" == goto["context"]["pattern"]
    assert "^" + _whole(freepbx._GOTO_EXTENSION) + "$" == goto["extension"]["pattern"]
    assert "^" + freepbx._LABEL.pattern + "$" == goto["priority"]["pattern"]


# -- the follow-me list, normalised as FreePBX does ----------------------------------------------

@pytest.mark.parametrize(("grplist", "expected", "noted"), [
    ("2001-2002-909121234567#", ["2001", "2002", "909121234567#"], []),
    (" 2002 - 2003 ", ["2002", "2003"], []),                      # blanks around entries: trimmed
    ("2002-20x03", ["2002", "2003"], ['"20x03" read as "2003"']),  # invalid characters removed
    ("2002--2003-", ["2002", "2003"], []),                         # blank entries dropped
    ("2002-2002#-2002", ["2002", "2002#"], ['"2002" dropped: already in the list']),
    ("2001#-2002", ["2001", "2002"], ['"2001#" imported as "2001"']),  # self# is rung directly
    ("105#", ["105#"], []),                                          # another extension's follow-me
    ("09121234567", ["09121234567#"], ['not an extension of this PBX']),
    ("*72-+98912#", ["*72#", "+98912#"], ['"*72" imported as "*72#"']),
    ("x-#", None, ['"x" dropped', '"#" dropped', "no entry that can be dialed"]),
    ("", None, ["no entry that can be dialed"]),
    ("9+98912#", None, ['"9+98912#" dropped: an external number here']),
])
def test_follow_me_list(grplist, expected, noted):
    declaration, notes = one({**BASE, "grplist": grplist})
    assert (declaration and declaration["list"]) == expected
    text = " ".join(outcome for key, outcome in notes if key == "grplist")
    for words in noted:
        assert words in text, notes
    if not noted:
        assert not [n for n in notes if n[0] == "grplist"], notes


def test_list_keeps_twenty_entries_and_reports_the_rest():
    declaration, notes = one({**BASE, "grplist": "-".join(f"90{n:09d}#" for n in range(1, 23))})
    assert len(declaration["list"]) == 20
    assert any("dropped: a list holds at most 20" in outcome for _, outcome in notes)


# -- each key ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ddial", "enabled", "noted"), [
    ("DIRECT", True, False), ("EXTENSION", False, False), (None, False, True), ("", True, True),
    ("SOMETHING", True, True),
])
def test_ddial_as_freepbx_dialplan_reads_it(ddial, enabled, noted):
    keys = {k: v for k, v in BASE.items() if k != "ddial"} | ({} if ddial is None else {"ddial": ddial})
    declaration, notes = one(keys)
    assert declaration["enabled"] is enabled
    assert any(key == "ddial" for key, _ in notes) is noted


@pytest.mark.parametrize(("key", "value", "field", "expected", "noted"), [
    ("prering", "0", "initial_ring_time", 0, False),
    ("prering", "", "initial_ring_time", 0, False),      # FreePBX skips an empty pre-ring
    ("prering", "61", "initial_ring_time", 60, True),
    ("prering", "x", "initial_ring_time", 0, True),
    ("grptime", "60", "ring_time", 60, False),
    ("grptime", "0", "ring_time", 1, True),
    ("grptime", "", "ring_time", 20, True),
    ("strategy", "hunt-prim", "strategy", "hunt-prim", False),
    ("strategy", "random", "strategy", "ringallv2-prim", True),
    ("grpconf", "ENABLED", "confirm_calls", True, False),
    ("grpconf", "DISABLED", "confirm_calls", False, False),
    ("grpconf", "enabled", "confirm_calls", False, True),
    ("grppre", "FM ", "cid_name_prefix", "FM ", False),
    ("grppre", "", "cid_name_prefix", None, False),
    ("grppre", "a|b", "cid_name_prefix", None, True),
    ("grppre", "${EVIL}", "cid_name_prefix", None, True),
    ("grppre", "پشتیبانی ", "cid_name_prefix", "پشتیبانی ", False),
    ("dring", "<http://x>;info=ring2", "alert_info", "<http://x>;info=ring2", False),
    ("dring", "info=ring2\\;x", "alert_info", None, True),
    ("ringing", "Ring", "music_on_hold", None, False),
    ("ringing", "", "music_on_hold", None, False),
    ("ringing", "jazz", "music_on_hold", "jazz", False),
    ("ringing", "a b", "music_on_hold", None, True),
    ("annmsg", "custom/welcome", "announcement", "custom/welcome", True),
    ("annmsg", "17", "announcement", None, True),
    ("annmsg", "custom/a&custom/b", "announcement", None, True),
    ("annmsg", "", "announcement", None, False),
    ("remotealertmsg", "custom/press-1", "confirm_prompt", "custom/press-1", True),
    ("remotealertmsg", "12", "confirm_prompt", None, True),
    ("toolatemsg", "custom/late", "too_late_prompt", "custom/late", True),
    ("changecid", "did", "external_cid_mode", "dialed", False),
    ("changecid", "weird", "external_cid_mode", "default", True),
    ("fixedcid", "+982155512000", "external_cid_number", "+982155512000", False),
    ("fixedcid", "not-a-number", "external_cid_number", None, True),
])
def test_each_key(key, value, field, expected, noted):
    declaration, notes = one({**BASE, key: value})
    assert declaration[field] == expected
    assert any(k == key for k, _ in notes) is noted, notes


@pytest.mark.parametrize(("key", "value", "words"), [
    ("remotealertmsg", "custom/press-1", "make sure this sound file is on the PBX"),
    ("toolatemsg", "17", "a recording id, with no file name here"),
    ("changecid", "fixed", "fixed sends fixedcid, which is not a number here"),
    ("changecid", "extern", "extern sends fixedcid, which is not a number here"),
    ("changecid", "weird", "FreePBX treats an unknown mode as default"),
    ("rvolume", "5", "no such setting here"),
    ("calendar_id", "3", "no such setting here"),
])
def test_settings_without_an_equivalent_are_reported(key, value, words):
    """What is not carried over, or only partly, is named in the report."""
    _, notes = one({**BASE, key: value})
    assert any(k == key and words in outcome for k, outcome in notes), notes


@pytest.mark.parametrize(("key", "value"), [
    ("remotealertmsg", ""), ("toolatemsg", ""), ("changecid", "default"), ("changecid", "DEFAULT"),
    ("changecid", ""), ("fixedcid", ""), ("rvolume", ""),
])
def test_empty_or_default_settings_are_not_reported(key, value):
    assert one({**BASE, key: value})[1] == []


# -- destinations --------------------------------------------------------------------------------

@pytest.mark.parametrize(("postdest", "expected", "noted"), [
    ("ext-local,2001,dest", {"voicemail": "2001"}, None),
    ("ext-local,2002,dest", {"voicemail": "2002"}, None),
    ("ext-local,vmu2002,1", {"voicemail": "2002"}, None),
    ("ext-local,vmb2002,1", {"voicemail": "2002"}, "busy greeting"),
    ("ext-local,vms2002,1", {"voicemail": "2002"}, "no greeting"),
    ("ext-local,2009,dest", "hangup", "not an extension with voicemail here"),
    ("app-blackhole,hangup,1", "hangup", None),
    ("", "hangup", None),
    ("from-did-direct,2003,1", {"extension": "2003"}, None),
    ("ext-local,2003,1", {"goto": {"context": "ext-local", "extension": "2003", "priority": 1}}, "goto"),
    ("app-blackhole,busy,1", {"goto": {"context": "app-blackhole", "extension": "busy", "priority": 1}}, "goto"),
    ("ivr-3,s,start", {"goto": {"context": "ivr-3", "extension": "s", "priority": "start"}}, "goto"),
    ("from-internal,${EVIL},1", "hangup", "not a dialplan location"),
    ("a,b", "hangup", "not a destination"),
    ("a,b,c,d", "hangup", "not a destination"),
    ("ctx,s,0", "hangup", "not a dialplan location"),
    ("ctx,#1,1", "hangup", "not a dialplan location"),
])
def test_destinations(postdest, expected, noted):
    declaration, notes = one({**BASE, "postdest": postdest})
    assert declaration["no_answer"] == expected
    text = " ".join(outcome for key, outcome in notes if key == "postdest")
    assert (noted in text) if noted else not text, notes


def test_mailbox_without_voicemail_or_in_another_context_is_reported():
    users = {**USERS, "2002": {"voicemail": "novm"}, "2003": {"voicemail": "sales"}}
    declaration, notes = one({**BASE, "postdest": "ext-local,2002,dest"}, users=users)
    assert declaration["no_answer"] == "hangup" and "has no voicemail (novm)" in notes[0][1]
    declaration, notes = one({**BASE, "postdest": "ext-local,2003,dest"}, users=users)
    assert declaration["no_answer"] == {"voicemail": "2003"} and '"sales"' in notes[0][1]
    assert one({**BASE, "postdest": "ext-local,2003,dest"}, users=users, voicemail_context="sales")[1] == []


def test_only_extensions_with_follow_me_keys_and_digit_numbers_are_imported():
    result = freepbx.convert(keys_of(USERS, {"2001": BASE, "GRP-7": BASE}))
    assert list(result.declarations) == ["2001"]
    assert result.skipped == ["GRP-7"]


def test_keys_may_carry_the_family():
    result = freepbx.convert({f"/AMPUSER/2001/followme/{k}": v for k, v in BASE.items()})
    assert result.declarations["2001"]["list"] == ["2002#"]  # 2002 is no user here: external, as FreePBX does


# -- validation with the host's policy -------------------------------------------------------------

def errors_with(checker, **policy):
    def errors_of(declarations):
        return [(e.extension, e.path, e.message)
                for e in checker.check_host("pbx1", {"followme_host": declarations, **policy})[1]]
    return errors_of


def test_settle_drops_entries_the_policy_refuses_and_reports_them(checker):
    keys = keys_of(USERS, {"2001": {**BASE, "grplist": "2002-900441234567#"},
                           "2002": {**BASE, "grplist": "900441234567#"},
                           "2003": {**BASE, "grplist": "2001", "postdest": "from-did-direct,2003,1"}})
    result = freepbx.settle(freepbx.convert(keys), errors_with(checker))
    assert result.declarations["2001"]["list"] == ["2002"]
    assert "2002" not in result.declarations and result.skipped == ["2002"]
    assert result.declarations["2003"]["no_answer"] == "hangup"  # 2003 -> 2003 loops: refused
    outcomes = [(n.extension, n.outcome) for n in result.notes]
    assert any(e == "2001" and "blocked by followme_external_deny" in o for e, o in outcomes), outcomes
    assert any(e == "2003" and "loops back" in o for e, o in outcomes), outcomes
    assert errors_with(checker)(result.declarations) == []


def test_settle_applies_known_extensions(checker):
    keys = keys_of(USERS, {"2001": {**BASE, "grplist": "2002-2003"}})
    result = freepbx.settle(freepbx.convert(keys), errors_with(checker, followme_known_extensions=["2001", "2002"]))
    assert result.declarations["2001"]["list"] == ["2002"]


KEY_VALUES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
SAMPLES = st.sampled_from(["", "DIRECT", "EXTENSION", "2001-2002#", "ext-local,2001,dest", "ringall", "7",
                           "from-did-direct,2002,1", "ENABLED", "Ring", "custom/x", "a,b,c"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(freepbx.KEYS + ("rvolume",)), st.one_of(KEY_VALUES, SAMPLES)))
def test_whatever_freepbx_holds_the_import_validates(checker, followme):
    result = freepbx.settle(freepbx.convert(keys_of(USERS, {"2001": followme})), errors_with(checker))
    assert errors_with(checker)(result.declarations) == []
    text = freepbx.render_yaml(result.declarations, variable="followme_host", host="h", report="r.md")
    assert yaml.safe_load(text)["followme_host"] == result.declarations
    freepbx.render_report(result, host="h", variable="followme_host", yaml_name="f.yml", total=1)


# -- rendering -------------------------------------------------------------------------------------

def test_yaml_is_stable_ordered_and_reads_back(checker):
    keys = keys_of(USERS, {ext: {**BASE, "grppre": 'FM "x"', "dring": "<http://x>;info=a"}
                           for ext in ("2001", "105", "10000", "2002")})
    result = freepbx.settle(freepbx.convert(keys), errors_with(checker))
    text = freepbx.render_yaml(result.declarations, variable="followme_host", host="pbx1", report="r.md")
    assert text == freepbx.render_yaml(dict(reversed(result.declarations.items())), variable="followme_host",
                                       host="pbx1", report="r.md")
    assert re.findall(r'^  "(\d+)":$', text, re.M) == ["105", "2001", "2002", "10000"]
    assert yaml.safe_load(text) == {"followme_host": result.declarations}
    assert '    strategy: ringall\n' in text and '    no_answer: hangup\n' in text
    assert [line.split(":")[0].strip() for line in text.splitlines()[7:7 + len(FIELDS)]] == list(FIELDS)
    assert "followme_host: {}" in freepbx.render_yaml({}, variable="followme_host", host="h", report="r")


def test_report_escapes_table_cells_and_is_stable():
    result = freepbx.convert(keys_of(USERS, {"2001": {**BASE, "grppre": "a|b`c"}}))
    report = freepbx.render_report(result, host="h", variable="followme", yaml_name="f.yml", total=1)
    assert "| 2001 | grppre | `a\\|b'c` |" in report
    assert report == freepbx.render_report(result, host="h", variable="followme", yaml_name="f.yml", total=1)
    clean = freepbx.convert(keys_of(USERS, {"2001": BASE}))
    assert "Everything was carried over" in freepbx.render_report(clean, host="h", variable="followme",
                                                                 yaml_name="f.yml", total=1)


# -- the module's parsing of `database query` ------------------------------------------------------

def listing(keys: dict[str, str], count: int | None = None) -> str:
    """What Asterisk 22 prints for followme_freepbx_facts.QUERY: one block per row, "%-5s: %-50s" per column."""
    rows = [("0", f"/AMPUSER/{key}|", str(len(value)), f"{value}|") for key, value in sorted(keys.items())]
    rows.append(("1", "END|", str(len(keys) if count is None else count), "|"))
    return "".join("".join(f"{name:<5}: {value:<50}\n" for name, value in zip("oknv", row, strict=True)) + "\n"
                   for row in rows)


KEYS = {"2001/followme/grplist": "2001-2002#", "2001/followme/grppre": "FM ", "2001/followme/dring": "",
        "2001/followme/postdest": "ext-local,2001,dest", "2001/cidname": "a: b|c  ",
        "a-very-long-key-name-over-fifty-characters-long-for-sure/x": "y" * 80}


def run_module(monkeypatch, outputs):
    calls = []

    def run_command(self, args, **kwargs):
        calls.append(args)
        return outputs.pop(0)

    monkeypatch.setattr(AnsibleModule, "run_command", run_command)
    with patch_module_args({}):
        module = AnsibleModule(argument_spec={"asterisk": {"type": "str", "default": "asterisk"}})
    return module, calls


def test_module_reads_every_key_exactly_in_one_command(monkeypatch):
    module, calls = run_module(monkeypatch, [(0, listing(KEYS), "")])
    assert followme_freepbx_facts.read_keys(module, "asterisk") == KEYS
    assert calls == [["asterisk", "-rx", f'database query "{followme_freepbx_facts.QUERY}"']]


def test_module_reads_an_empty_database(monkeypatch):
    module, _ = run_module(monkeypatch, [(0, listing({}), "")])
    assert followme_freepbx_facts.read_keys(module, "asterisk") == {}


@pytest.mark.parametrize("output", [
    "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)\n",
    listing(KEYS, count=7),
    listing(KEYS).replace("FM |", "FM|"),                        # a value shorter than its length
    listing(KEYS).split("o    : 1")[0],                           # no count row
    listing({"2001/followme/grplist": "a\nb"}),                  # a value over two lines
    "",
])
def test_module_fails_on_anything_but_a_complete_listing(monkeypatch, output):
    module, _ = run_module(monkeypatch, [(0, output, "")])
    failures = []

    def fail_json(self, **kwargs):
        failures.append(kwargs)
        raise SystemExit(1)

    monkeypatch.setattr(AnsibleModule, "fail_json", fail_json)
    with pytest.raises(SystemExit):
        followme_freepbx_facts.read_keys(module, "asterisk")
    assert "could not read Asterisk's database" in failures[0]["msg"]


# -- the labels tables (README and docs/panel-fields.fa.md) --------------------------------------

def label_table_fields(text: str, heading: str) -> list[str]:
    """The YAML field of each row of the first table after the heading (the column whose header says YAML)."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    column = next(index for index, cell in enumerate(rows[0]) if "YAML" in cell)
    fields = []
    for row in rows[1:]:
        names = re.fullmatch(r"`([a-z_]+)`", row[column])
        assert names, row
        fields.append(names.group(1))
    return fields


@pytest.mark.parametrize(("path", "heading"), [
    ("README.md", "## Labels of the panel"),
    ("docs/panel-fields.fa.md", "## جدول فیلدها"),
])
def test_labels_tables_name_every_schema_field_once(path, heading):
    fields = label_table_fields((ROOT / path).read_text(), heading)
    assert fields == list(FIELDS), fields  # every field, once, in the schema's order


def test_both_labels_tables_give_the_same_panel_and_freepbx_labels():
    def labels(path, heading):
        section = (ROOT / path).read_text().split(heading, 1)[1]
        return [line.split("|")[1:4] for line in section.splitlines() if line.startswith("| ")][1:1 + len(FIELDS)]

    assert labels("README.md", "## Labels of the panel") == labels("docs/panel-fields.fa.md", "## جدول فیلدها")


#: The labels of the panel page's fields (../shared/seed/followme-panel-page.fa.md, in bold there).
PANEL_LABELS = ["لیست شماره های مرا دنبال کن", "زمان زنگ خوردن اولیه", "استراتژی زنگ خوردن", "زمان زنگ خوردن",
                "تنظیمات عدم پاسخگویی تماس"]


@pytest.mark.parametrize(("path", "heading"), [
    ("README.md", "## Labels of the panel"),
    ("docs/panel-fields.fa.md", "## جدول فیلدها"),
])
def test_panel_labels_are_the_panel_pages_each_once(path, heading):
    section = (ROOT / path).read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    first = [line.split("|")[1].strip() for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("|---")][1:]
    assert [cell for cell in first if cell != "—"] == [f"«{label}»" for label in PANEL_LABELS]
