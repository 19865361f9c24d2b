"""Move in from FreePBX (README "Move in from FreePBX"), on a FreePBX-shaped lab PBX.

The lab host is seeded with FreePBX's Follow Me keys (Asterisk database, family AMPUSER, the layout
of FreePBX's findmefollow module) for a dozen extensions covering every strategy and every kind of
destination; playbooks/import_freepbx.yml reads them over real SSH and writes a user inventory on the
controller; the written declarations are validated with playbooks/validate.yml, deployed with site.yml,
and real SIP calls show the imported timelines. The keys are removed afterwards.
"""

from __future__ import annotations

import shlex

import pytest
import yaml
from deploy import CALLS_INVENTORY, LAB_INVENTORY, ROOT, run_playbook
from labcall import CARRIER, answer, place_call, ssh
from test_strategies import check_timeline, hung_up, reached_voicemail

pytestmark = [pytest.mark.lab]

#: Plain FreePBX users (AMPUSER/<ext>/...): 2001..2014 with a mailbox in context default, 2015 without.
USERS = {f"20{n:02d}": "default" for n in range(1, 15)} | {"2015": "novm"}

#: AMPUSER/<ext>/followme/<key> = value, as FreePBX's findmefollow module writes them.
FOLLOWME = {
    "2001": {"ddial": "DIRECT", "strategy": "ringall", "prering": "2", "grptime": "3",
             "grplist": "2002-2003-909121234567#", "postdest": "ext-local,2001,dest", "grppre": "FM ",
             "dring": "<http://localhost>;info=alert-internal", "ringing": "Ring", "grpconf": "DISABLED",
             "annmsg": "", "remotealertmsg": "", "toolatemsg": "", "changecid": "default", "fixedcid": ""},
    "2002": {"ddial": "DIRECT", "strategy": "ringall-prim", "prering": "2", "grptime": "3",
             "grplist": "2002-2003", "postdest": "app-blackhole,hangup,1"},
    "2003": {"ddial": "DIRECT", "strategy": "hunt", "prering": "2", "grptime": "3", "grplist": "2004-2005",
             "postdest": "lab-dest,701,1", "rvolume": "5"},
    "2004": {"ddial": "DIRECT", "strategy": "hunt-prim", "prering": "2", "grptime": "3",
             "grplist": " 2005 - 20x06 ", "postdest": "from-did-direct,2010,1", "grppre": "FM "},
    "2005": {"ddial": "DIRECT", "strategy": "memoryhunt", "prering": "2", "grptime": "3",
             "grplist": "2006-2007-2008", "postdest": "ext-local,vmb2005,1"},
    "2006": {"ddial": "DIRECT", "strategy": "memoryhunt-prim", "prering": "0", "grptime": "3",
             "grplist": "2007-2008-2007", "postdest": "ext-local,2015,dest"},
    "2007": {"ddial": "EXTENSION", "strategy": "firstavailable", "prering": "2", "grptime": "3",
             "grplist": "2008-2009-2010", "postdest": "ext-local,2007,dest"},
    "2008": {"ddial": "DIRECT", "strategy": "firstnotonphone", "prering": "2", "grptime": "3",
             "grplist": "2009-2010-09121234567", "grpconf": "ENABLED", "remotealertmsg": "custom/press-1",
             "toolatemsg": "custom/too-late", "postdest": "ext-local,vmu2008,1"},
    "2009": {"ddial": "DIRECT", "strategy": "ringallv2", "prering": "2", "grptime": "3",
             "grplist": "2009-2010-2009#", "ringing": "default", "annmsg": "followme/pls-hold-while-try",
             "postdest": "from-did-direct,2010,1"},
    "2010": {"ddial": "DIRECT", "strategy": "ringallv2-prim", "prering": "2", "grptime": "3",
             "grplist": "2001-2002-900441234567#", "changecid": "fixed", "fixedcid": "02112345678",
             "postdest": "ivr-3,s,1"},
    "2011": {"ddial": "DIRECT", "strategy": "random", "prering": "5", "grptime": "90", "grplist": "2010#-2003#",
             "annmsg": "17", "postdest": "bogus destination", "grppre": "a|b"},
    "2012": {"strategy": "ringall", "prering": "2", "grptime": "3", "grplist": "2013-2014",
             "postdest": "ext-local,2012,dest"},
    "2013": {"ddial": "DIRECT", "strategy": "hunt", "grplist": "x-#- -abc", "postdest": "ext-local,2013,dest"},
}

#: What the import must write (variable followme_host), field for field.
EXPECTED = {
    "2001": {"list": ["2002", "2003", "909121234567#"], "initial_ring_time": 2, "strategy": "ringall", "ring_time": 3,
             "no_answer": {"voicemail": "2001"}, "enabled": True, "confirm_calls": False, "cid_name_prefix": "FM ",
             "alert_info": "<http://localhost>;info=alert-internal", "music_on_hold": None, "announcement": None},
    "2002": {"list": ["2002", "2003"], "initial_ring_time": 2, "strategy": "ringall-prim", "ring_time": 3,
             "no_answer": "hangup"},
    "2003": {"list": ["2004", "2005"], "initial_ring_time": 2, "strategy": "hunt", "ring_time": 3,
             "no_answer": {"goto": {"context": "lab-dest", "extension": "701", "priority": 1}}},
    "2004": {"list": ["2005", "2006"], "initial_ring_time": 2, "strategy": "hunt-prim", "ring_time": 3,
             "no_answer": {"extension": "2010"}, "cid_name_prefix": "FM "},
    "2005": {"list": ["2006", "2007", "2008"], "initial_ring_time": 2, "strategy": "memoryhunt", "ring_time": 3,
             "no_answer": {"voicemail": "2005"}},
    "2006": {"list": ["2007", "2008"], "initial_ring_time": 0, "strategy": "memoryhunt-prim", "ring_time": 3,
             "no_answer": "hangup"},
    "2007": {"list": ["2008", "2009", "2010"], "initial_ring_time": 2, "strategy": "firstavailable", "ring_time": 3,
             "no_answer": {"voicemail": "2007"}, "enabled": False},
    "2008": {"list": ["2009", "2010", "09121234567#"], "initial_ring_time": 2, "strategy": "firstnotonphone",
             "ring_time": 3, "no_answer": {"voicemail": "2008"}, "confirm_calls": True,
             "confirm_prompt": "custom/press-1", "too_late_prompt": "custom/too-late"},
    "2009": {"list": ["2009", "2010"], "initial_ring_time": 2, "strategy": "ringallv2", "ring_time": 3,
             "no_answer": {"extension": "2010"}, "music_on_hold": "default",
             "announcement": "followme/pls-hold-while-try"},
    "2010": {"list": ["2001", "2002"], "initial_ring_time": 2, "strategy": "ringallv2-prim", "ring_time": 3,
             "no_answer": {"goto": {"context": "ivr-3", "extension": "s", "priority": 1}},
             "external_cid_mode": "fixed", "external_cid_number": "02112345678"},
    "2011": {"list": ["2010#"], "initial_ring_time": 5, "strategy": "ringallv2-prim", "ring_time": 60,
             "no_answer": "hangup"},
    "2012": {"list": ["2013", "2014"], "initial_ring_time": 2, "strategy": "ringall", "ring_time": 3,
             "no_answer": {"voicemail": "2012"}, "enabled": False},
}
FIELD_DEFAULTS = {"enabled": True, "confirm_calls": False, "cid_name_prefix": None, "alert_info": None,
                  "music_on_hold": None, "announcement": None, "confirm_prompt": None, "too_late_prompt": None,
                  "external_cid_mode": "default", "external_cid_number": None, "schedule": None}

#: (extension, FreePBX key, words of what the import did) that the report must list.
REPORTED = [
    ("2003", "rvolume", "not carried over"),
    ("2004", "grplist", '"20x06" read as "2006"'),
    ("2005", "postdest", "busy greeting"),
    ("2006", "grplist", '"2007" dropped: already in the list'),
    ("2006", "postdest", "2015 has no voicemail (novm)"),
    ("2008", "grplist", '"09121234567" imported as "09121234567#"'),
    ("2008", "remotealertmsg", "imported as confirm_prompt"),
    ("2008", "toolatemsg", "imported as too_late_prompt"),
    ("2009", "grplist", '"2009#" imported as "2009"'),
    ("2009", "annmsg", "make sure this sound file is on the PBX"),
    ("2010", "grplist", "blocked by followme_external_deny"),
    ("2010", "postdest", "imported as goto ivr-3,s,1"),
    ("2011", "grplist", '"2003#" dropped: external number blocked by followme_external_deny'),
    ("2011", "strategy", "imported as ringallv2-prim"),
    ("2011", "grptime", "imported as 60"),
    ("2011", "annmsg", "a recording id"),
    ("2011", "postdest", "imported as hangup"),
    ("2011", "grppre", "not carried over"),
    ("2012", "ddial", "imported as enabled: false"),
    ("2013", "grplist", "not imported"),
]


def _put(key: str, value: str) -> str:
    return f"asterisk -rx {shlex.quote(f'database put AMPUSER {key} {json_quote(value)}')}"


def json_quote(value: str) -> str:
    """A value as one argument of the Asterisk CLI: double quotes, with \\ and \" escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _database(host) -> str:
    return ssh(host, "asterisk -rx 'database show AMPUSER'").stdout


@pytest.fixture(scope="module")
def freepbx(lab_host):
    """This worker's lab PBX with FreePBX's keys in Asterisk's database; removed afterwards."""
    assert _database(lab_host).strip() == "0 results found.", "AMPUSER keys left on the lab host"
    commands = []
    for user, voicemail in USERS.items():
        commands += [_put(f"{user}/cidname", f"User {user}"), _put(f"{user}/voicemail", voicemail),
                     _put(f"{user}/device", user)]
    for extension, keys in FOLLOWME.items():
        commands += [_put(f"{extension}/followme/{key}", value) for key, value in keys.items()]
    try:
        ssh(lab_host, " && ".join(commands), timeout=60)
        shown = _database(lab_host)
        assert f"{len(commands)} results found." in shown, shown
        yield lab_host
    finally:
        ssh(lab_host, "asterisk -rx 'database deltree AMPUSER'")
        assert _database(lab_host).strip() == "0 results found."


@pytest.fixture(scope="module")
def user_inventory(freepbx, tmp_path_factory):
    """An empty user inventory naming the lab host as a PBX (as a user's would before the import)."""
    directory = tmp_path_factory.mktemp("inventory")
    (directory / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"children": {"pbx": {"hosts": {freepbx.name: {"ansible_host": freepbx.address}}}}}}))
    (directory / "group_vars" / "pbx").mkdir(parents=True)
    (directory / "group_vars" / "pbx" / "connection.yml").write_text(yaml.safe_dump({
        "ansible_user": "root", "ansible_ssh_private_key_file": str(ROOT / ".lab" / "id_ed25519"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3"}))
    return directory


def _import(host, directory, **kwargs):
    return run_playbook("playbooks/import_freepbx.yml", LAB_INVENTORY, limit=host.name,
                        extra_vars={"followme_import_dir": str(directory)}, verbose=True, **kwargs)


@pytest.fixture(scope="module")
def imported(freepbx, user_inventory):
    before = _database(freepbx)
    run = _import(freepbx, user_inventory)
    assert run.ok, run.output
    assert run.recap[freepbx.name]["changed"] == 1, run.output
    assert _database(freepbx) == before, "the import changed the PBX's database"
    return user_inventory / "host_vars" / freepbx.name


def test_import_writes_the_declarations_freepbx_had(imported):
    text = (imported / "followme.yml").read_text()
    written = yaml.safe_load(text)
    assert list(written) == ["followme_host"]
    assert list(written["followme_host"]) == sorted(EXPECTED, key=int)
    for extension, expected in EXPECTED.items():
        assert written["followme_host"][extension] == {**FIELD_DEFAULTS, **expected}, extension
    assert '  "2001":\n    list: ["2002", "2003", "909121234567#"]\n    initial_ring_time: 2\n' in text


def test_report_lists_what_was_not_carried_over(imported):
    report = (imported / "followme-import-report.md").read_text()
    assert "FreePBX had Follow Me settings for 13 extension(s). 12 are in `followme_host`" in report, report
    assert "1 could not be imported: 2013." in report, report
    rows = [line for line in report.splitlines() if line.startswith("| 20")]
    for extension, key, words in REPORTED:
        assert any(row.startswith(f"| {extension} | {key} |") and words in row for row in rows), \
            (extension, key, words, report)
    # Settings carried over as FreePBX had them are not in the report.
    assert not any(row.startswith("| 2001 ") or row.startswith("| 2002 ") for row in rows), report


def test_written_declarations_validate(imported, user_inventory, freepbx):
    run = run_playbook("playbooks/validate.yml", user_inventory, verbose=True)
    assert run.ok, run.output
    assert f"12 follow-me declaration(s) valid on {freepbx.name}, 10 enabled" in run.output, run.output
    plan = f"{freepbx.name}: 2004: ring 2004 for 2 s; then ring 2005, 2006 one at a time, 3 s each; then extension 2010"
    assert plan in run.output, run.output


def test_second_import_writes_nothing_and_a_change_is_picked_up(imported, freepbx, user_inventory):
    files = sorted(imported.iterdir())
    stamps = {path: path.stat().st_mtime_ns for path in files}
    run = _import(freepbx, user_inventory)
    assert run.ok, run.output
    assert run.recap[freepbx.name]["changed"] == 0, run.output
    assert {path: path.stat().st_mtime_ns for path in files} == stamps
    # The panel changes one setting: --check --diff shows it and writes nothing; the import writes it.
    ssh(freepbx, _put("2003/followme/grptime", "4"))
    try:
        run = _import(freepbx, user_inventory, check=True, diff=True)
        assert run.ok and run.recap[freepbx.name]["changed"] == 1, run.output
        assert "-    ring_time: 3\n+    ring_time: 4" in run.output, run.output
        assert {path: path.stat().st_mtime_ns for path in files} == stamps
        run = _import(freepbx, user_inventory)
        assert run.ok and run.recap[freepbx.name]["changed"] == 1, run.output
        assert yaml.safe_load((imported / "followme.yml").read_text())["followme_host"]["2003"]["ring_time"] == 4
    finally:
        ssh(freepbx, _put("2003/followme/grptime", "3"))
    run = _import(freepbx, user_inventory)
    assert run.ok and run.recap[freepbx.name]["changed"] == 1, run.output


@pytest.fixture(scope="module")
def deployed(imported, user_inventory, freepbx):
    run = run_playbook("site.yml", user_inventory, limit=freepbx.name)
    assert run.ok, run.output
    yield freepbx
    run = run_playbook("site.yml", CALLS_INVENTORY, limit=freepbx.name)
    assert run.ok, run.output  # the call tests' declarations are back


def test_import_without_a_destination_or_a_host_fails_and_writes_nothing(tmp_path):
    run = run_playbook("playbooks/import_freepbx.yml", ROOT / "tests" / "inventories" / "unreachable")
    assert run.returncode != 0 and "-e followme_import_dir=DIR" in run.output, run.output
    assert run.recap["localhost"]["failed"] == 1, run.output
    run = run_playbook("playbooks/import_freepbx.yml", ROOT / "tests" / "inventories" / "unreachable",
                       extra_vars={"followme_import_dir": str(tmp_path), "followme_import_hosts": "freepbx"})
    assert run.returncode != 0 and "name the FreePBX" in run.output, run.output
    assert list(tmp_path.iterdir()) == []


def test_call_follows_the_imported_ringall(deployed):
    # 2001: ringall, pre-ring 2 s, ring time 3 s, then "Normal Extension Behavior" = voicemail 2001.
    result = place_call(deployed, "2001")
    check_timeline(result, {"2001": [(0, 2)], "2002": [(2, 5)], "2003": [(2, 5)], CARRIER: [(2, 5)]})
    reached_voicemail(result, "2001")
    assert result.invite_events(CARRIER)[0].user == "09121234567", result.format()
    assert all(e.from_name.startswith("FM ") for e in result.invite_events("2002")), result.format()
    assert result.invite_events("2002")[0].headers.get("Alert-Info") == "<http://localhost>;info=alert-internal"


def test_call_follows_the_imported_ringall_prim_to_hangup(deployed):
    # 2002: app-blackhole,hangup,1 -> hangup after the list.
    result = place_call(deployed, "2002")
    check_timeline(result, {"2002": [(0, 2), (2, 5)], "2003": [(2, 5)]})
    hung_up(result, 5)


def test_call_follows_the_imported_hunt_prim_to_another_extension(deployed):
    # 2004: list normalised from " 2005 - 20x06 "; from-did-direct,2010,1 -> 2010's normal handling.
    result = place_call(deployed, "2004", {"2010": answer(after=1)})
    check_timeline(result, {"2004": [(0, 2)], "2005": [(2, 5)], "2006": [(5, 8)], "2010": [(8, None)]})
    assert result.answered_by == "2010", result.format()


def test_call_to_an_extension_freepbx_had_disabled_gets_normal_handling(deployed):
    # 2007: ddial EXTENSION -> enabled: false; the lab's own dialplan rings 2007 alone.
    result = place_call(deployed, "2007", {"2007": answer(after=1)})
    check_timeline(result, {"2007": [(0, None)]})
    assert result.answered_by == "2007", result.format()
