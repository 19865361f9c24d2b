"""playbooks/validate.yml and site.yml as a merge-request pipeline and an admin run them: hosts that do not
exist (TEST-NET-1 addresses), never contacted. Runs with whichever ansible-core the interpreter running pytest
has: 2.19 names the file, line and column of every value; 2.17 (`python -m pytest` from a 2.17 environment)
of mappings and strings only."""

import re

from ansible.release import __version__ as ANSIBLE_VERSION
from deploy import ROOT, run_playbook

#: ansible-core 2.19 tags every value (numbers too) with its origin.
ORIGINS = tuple(int(part) for part in ANSIBLE_VERSION.split(".")[:2]) >= (2, 19)
BADVARS = "tests/inventories/badvars/host_vars/pbx-bad.yml"


def flat(text: str) -> str:
    """Output with YAML's line folding undone (the yaml callback wraps long strings and doubles quotes)."""
    return " ".join(text.split()).replace("''", "'")


def test_good_declarations_pass_and_plans_are_printed_with_v():
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/unreachable", verbose=True)
    assert run.ok, run.output
    assert run.recap["pbx-tehran"] == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0}
    assert ("pbx-tehran: 2001: ring 2001 for 27 s, joined after 7 s by 2002, 909121234567# for 20 s; "
            "then voicemail 2001") in run.output
    assert "pbx-shiraz: 3001: ring 3001 for 7 s; then ring 3002, then add 3003 one by one, 15 s each step" in run.output
    # -v names the layer of each declaration (and its file and line); a followme in host_vars is warned about.
    assert re.search(r"pbx-tehran: 2001: .*\[followme, tests/inventories/unreachable/group_vars/pbx/followme\.yml:\d+",
                     run.output), run.output
    assert re.search(r"pbx-shiraz: 3001: .*\[followme, tests/inventories/unreachable/host_vars/pbx-shiraz\.yml:\d+",
                     run.output), run.output
    assert "pbx-shiraz: followme is set in tests/inventories/unreachable/host_vars/pbx-shiraz.yml" in flat(run.output)
    assert "Put this host's own declarations in followme_host" in flat(run.output)


def test_bad_declarations_fail_naming_host_extension_field_and_value():
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/bad")
    assert run.returncode != 0
    output = flat(run.output)
    for expected in [
        'pbx-tehran: extension 2001: list[2] = "900441234567#": external number blocked by followme_external_deny',
        'pbx-tehran: extension 2001: ring_time = "10": must be an integer, not a string',
        "pbx-tehran: extension 2002: stratgy = \"hunt\": unknown field 'stratgy'; did you mean 'strategy'?",
        "pbx-shiraz: extension 3001: (extension key) = 3001: an extension key must be 1 to 15 digits, "
        "written as a quoted string",
        'pbx-shiraz: extension 3002: list[1] = "3004&PJSIP/666": not accepted',
        "pbx-shiraz: extension 3002: initial_ring_time = 61: must be at most 60",
        'pbx-shiraz: extension 3002: enabled = "yes": must be a boolean (true or false), not a string',
    ]:
        assert expected in output, expected
        assert output.count(expected) == 1, f"printed more than once: {expected}"
    assert all(run.recap[host]["unreachable"] == 0 for host in ("pbx-tehran", "pbx-shiraz")), run.output


def test_no_answer_loop_is_reported():
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/bad",
                       extra_vars={"followme": {"2002": {"list": ["2003"], "no_answer": {"extension": "2003"}},
                                                "2003": {"list": ["2004"], "no_answer": {"extension": "2002"}}}})
    assert run.returncode != 0
    assert "extension 2002: no_answer.extension = \"2003\": no_answer chain loops back: 2002 -> 2003 -> 2002" \
        in flat(run.output)


def test_bad_role_variables_on_one_host_stop_site_yml_before_any_host_is_touched():
    run = run_playbook("site.yml", ROOT / "tests/inventories/badvars", timeout=300)
    assert run.returncode != 0
    output = flat(run.output)
    # The install task never started, on any host; no host was contacted.
    assert "Install the follow-me dialplan" not in run.output
    # ok: the role's argument_specs check and followme_validate, nothing else.
    assert run.recap["pbx-good"] == {"ok": 2, "changed": 0, "unreachable": 0, "failed": 0}
    assert run.recap["pbx-bad"]["failed"] == 1 and run.recap["pbx-bad"]["unreachable"] == 0
    expected = [
        "pbx-bad: followme_confirm_timeout = true: must be an integer, not a boolean",
        'pbx-bad: followme_context = "follow me": not accepted. Accepted: An Asterisk context name',
        "pbx-bad: folowme = (...): unknown variable 'folowme' (names starting with followme belong to the role); "
        "did you mean 'followme'?",
        "pbx-bad: followme_defualts = (...): unknown variable 'followme_defualts' (names starting with followme "
        "belong to the role); did you mean 'followme_defaults'?",
        'pbx-bad: extension 2001: (extension key) = "2001": written twice in one mapping (lines 10 and 13): YAML '
        "keeps the last and drops the first without a word. Accepted: each key once; merge the two "
        f"(at {BADVARS}:13:3)",
        'pbx-bad: extension 2001: cid_name_prefix = "{{ undefined_prefix_variable }}": template error: '
        "'undefined_prefix_variable' is undefined",
        'pbx-bad: extension 2002: list[1] = "9*00441234567#": external number blocked by followme_external_deny '
        "pattern '^[0-9*]?00' (toll-fraud policy; matched as 900441234567#",
        'pbx-bad: extension 2002: no_answer.extension = "900442071234567": blocked by followme_external_deny',
        "pbx-bad: extension 2003: ringtime = 5: unknown field 'ringtime'; did you mean 'ring_time'?",
        "pbx-bad: extension 2003: stratgy = \"hunt\": unknown field 'stratgy'; did you mean 'strategy'?",
        'pbx-bad: extension 2003: strategy = "hunts": must be one of: ringall, ringall-prim, hunt, hunt-prim, '
        "memoryhunt, memoryhunt-prim, firstavailable, firstnotonphone, ringallv2, ringallv2-prim; did you mean 'hunt'?",
        'pbx-bad: extension 2003: no_answer.goto.context = "followme-leg": the role\'s own contexts',
    ]
    if ORIGINS:  # numbers carry their origin: shown as written, with file and line
        expected.append("pbx-bad: followme_file_mode = 0664: mode 0664 lets group or other write the file")
        expected.append(f"(at {BADVARS}:4:21)")
    else:  # ansible-core < 2.19: the number YAML made of 0664, explained
        expected.append("pbx-bad: followme_file_mode = 436: mode 0664 lets group or other write the file")
    for line in expected:
        assert line in output, line
        assert output.count(line) == 1, f"printed more than once: {line}"
    assert "does not look like one of this site's extensions" in output and "likely 909121234567#" in output
    assert f"(at {BADVARS}:14:20)" in output  # the warning's entry, a string: located on 2.17 too
    assert "Traceback" not in run.output


def test_duplicate_declaration_key_is_an_error_even_in_a_valid_host():
    """The first of two keys is dropped by YAML: an error, not Ansible's warning, even when what is left is valid."""
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/duplicates")
    assert run.returncode != 0
    output = flat(run.output)
    assert re.search(r"pbx-dup: extension 2001: ring_time = 30: written twice in one mapping \(lines \d+ and \d+\)",
                     output), output
    assert 'pbx-dup: followme = (...): written twice in one mapping' in output


def test_ansible_can_refuse_duplicate_keys_itself(monkeypatch):
    """README: `duplicate_dict_key = error` makes Ansible refuse them while loading, before any play."""
    monkeypatch.setenv("ANSIBLE_DUPLICATE_YAML_DICT_KEY", "error")
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/duplicates")
    assert run.returncode != 0
    assert "duplicate" in run.output.lower()
    assert "TASK [followme.asterisk.followme : Validate" not in run.output


def test_warnings_are_shown_at_most_twenty_per_host():
    followme = {str(3000 + i): {"list": ["09121234567"]} for i in range(25)}
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/unreachable", limit="pbx-shiraz",
                       extra_vars={"followme": followme})
    assert run.ok, run.output
    output = flat(run.output)
    assert output.count("does not look like one of this site's extensions") == 20
    assert "pbx-shiraz: 5 more follow-me warning(s)" in output


def test_a_yaml_alias_bomb_is_an_error_in_bounded_time(tmp_path):
    # Written here, not kept in the repository: linters that expand aliases would choke on it.
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "hosts.yml").write_text("pbx:\n  hosts:\n    pbx-bomb:\n      ansible_host: 192.0.2.40\n")
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]  # 9**9 values expanded
    lines += ["followme:", '  "2001": {list: *a8}']
    (tmp_path / "host_vars" / "pbx-bomb.yml").write_text("\n".join(lines) + "\n")
    run = run_playbook("playbooks/validate.yml", tmp_path, timeout=120)
    assert run.returncode != 0
    assert "pbx-bomb: followme = (...): holds more than 1,000,000 values in all (a YAML alias bomb?)" \
        in flat(run.output), run.output
    assert "Traceback" not in run.output


def test_deep_nesting_from_extra_vars_is_an_error():
    deep = "x"
    for _ in range(300):
        deep = [deep]
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/unreachable", limit="pbx-shiraz",
                       extra_vars={"followme": {"2001": {"list": ["2002"], "ring_time": deep}}})
    assert run.returncode != 0
    assert "is nested more than 32 levels deep (the format needs 6): not checked further" in flat(run.output)
    assert "Traceback" not in run.output


def test_an_inventory_that_does_not_exist_fails_instead_of_going_green():
    run = run_playbook("playbooks/validate.yml", ROOT / "does-not-exist")
    assert run.returncode != 0, run.output
    assert "No host is in group 'pbx' of the inventory" in flat(run.output)
    assert "Nothing was validated and nothing was changed" in flat(run.output)


def test_an_inventory_without_pbx_hosts_fails_site_yml_too(tmp_path):
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    web1: {ansible_host: 192.0.2.9}\n")
    run = run_playbook("site.yml", tmp_path)
    assert run.returncode != 0, run.output
    assert "No host is in group 'pbx' of the inventory" in flat(run.output)
    assert "web1" not in run.recap, run.output


def test_a_pbx_host_without_any_follow_me_variables_is_named(tmp_path):
    (tmp_path / "hosts.yml").write_text("pbx:\n  hosts:\n    pbx-a: {ansible_host: 192.0.2.10}\n"
                                        "    pbx-b: {ansible_host: 192.0.2.11}\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "pbx-a.yml").write_text('followme:\n  "2001": {list: ["2002"]}\n')
    run = run_playbook("playbooks/validate.yml", tmp_path)
    assert run.returncode != 0, run.output
    assert ("pbx-b: followme = null: the inventory names this host as a PBX (group pbx) but gives it no "
            "follow-me variables at all") in flat(run.output), run.output
    assert run.recap["pbx-a"]["failed"] == 0


def test_a_rerun_takes_the_answer_kept_for_the_same_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    playbook = tmp_path / "validate.yml"  # the module's own message, shown without -v (which checks every time)
    playbook.write_text(f"""\
- name: Validate and say what was found
  hosts: pbx
  gather_facts: false
  tasks:
    - name: Validate
      followme.asterisk.followme_validate:
        schema: {ROOT / "schemas" / "followme.schema.json"}
      register: checked
    - name: Say
      ansible.builtin.debug:
        msg: "{{{{ checked.msg }}}}"
""")
    inventory = ROOT / "tests/inventories/unreachable"
    kept = tmp_path / "followme-asterisk"
    first = run_playbook(str(playbook), inventory, limit="pbx-tehran")
    assert first.ok and "follow-me declaration(s) valid on pbx-tehran" in first.output, first.output
    assert len(list(kept.glob("valid-*.json"))) == 1
    next(kept.glob("valid-*.json")).write_text("[987, 654]")  # what a rerun reads instead of checking again
    again = run_playbook(str(playbook), inventory, limit="pbx-tehran")
    assert again.ok and "987 follow-me declaration(s) valid on pbx-tehran, 654 enabled" in again.output, again.output
    # other variables are another question: checked, and kept under another name
    other = run_playbook(str(playbook), inventory, limit="pbx-tehran",
                         extra_vars={"followme_host": {"2999": {"list": ["2998"]}}})
    assert other.ok and "987 follow-me" not in other.output, other.output
    assert len(list(kept.glob("valid-*.json"))) == 2
    # errors are never kept: the bad value is reported on every run
    for _ in range(2):
        bad = run_playbook(str(playbook), inventory, limit="pbx-tehran",
                           extra_vars={"followme_host": {"2999": {"list": ["2998"], "ring_time": 0}}})
        assert bad.returncode != 0 and "extension 2999: ring_time = 0" in flat(bad.output), bad.output
    assert len(list(kept.glob("valid-*.json"))) == 2
