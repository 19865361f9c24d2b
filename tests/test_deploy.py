"""Deploying to a real PBX: reload only on change, proven from Asterisk's state; check/diff;
rollback; faults leave the PBX on a working config; calls in progress survive.

Each test runs site.yml (over real SSH) against this worker's lab host and reads the results
from Asterisk itself. Tests that change what is deployed put the call declarations back.
"""

from __future__ import annotations

import copy
import re
import threading
import time

import pytest
import yaml
from deploy import CALLS_INVENTORY, ROOT, run_playbook
from labcall import answer, asterisk_rx, place_call, ssh

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("call_declarations")]

MANAGED = "/etc/asterisk/extensions_followme.conf"
CALLS = yaml.safe_load((ROOT / "tests/inventories/calls/group_vars/pbx/followme.yml").read_text())


def declarations(**changes):
    """The call declarations with some extensions replaced (None removes one)."""
    followme = copy.deepcopy(CALLS["followme"])
    for extension, declaration in changes.items():
        if declaration is None:
            followme.pop(extension)
        else:
            followme[extension] = declaration
    return {"followme": followme}


def deploy(host, **options):
    return run_playbook("site.yml", CALLS_INVENTORY, limit=host.name, **options)


def last_reload(host) -> int:
    """Seconds since Asterisk last reloaded a module, from `core show uptime seconds`."""
    text = asterisk_rx(host, "core show uptime seconds")
    return int(re.search(r"Last reload: (\d+)", text).group(1))


def file_state(host) -> str:
    return ssh(host, f"sha256sum {MANAGED} /etc/asterisk/extensions.conf; stat -c '%U:%G %a' {MANAGED}").stdout


def live_extensions(host) -> set[str]:
    text = asterisk_rx(host, "dialplan show followme")
    return set(re.findall(r"^\s+'(\d+)' =>", text, re.M))


def test_second_run_changes_nothing_and_asterisk_does_not_reload(lab_host):
    time.sleep(1.5)  # so that a reload during the run would show in "Last reload" (whole seconds)
    before = last_reload(lab_host)
    started = time.monotonic()
    run = deploy(lab_host)
    elapsed = time.monotonic() - started
    assert run.ok and run.recap[lab_host.name]["changed"] == 0, run.output
    assert last_reload(lab_host) >= before + int(elapsed), "Asterisk reloaded although nothing changed"


def test_check_mode_writes_and_reloads_nothing_and_diff_shows_the_change(lab_host):
    files, reloaded = file_state(lab_host), last_reload(lab_host)
    changed = declarations(**{"2003": {**CALLS["followme"]["2003"], "ring_time": 9}})
    run = deploy(lab_host, extra_vars=changed, check=True, diff=True)
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    assert ("-exten => 2003,1,Gosub(followme-call,s,1(2003,,0,Rk0g,,,,,,,,1,pre:2:0e2003,each:3:0i2004-0i2005))"
            in run.output)
    assert ("+exten => 2003,1,Gosub(followme-call,s,1(2003,,0,Rk0g,,,,,,,,1,pre:2:0e2003,each:9:0i2004-0i2005))"
            in run.output)
    assert file_state(lab_host) == files
    assert last_reload(lab_host) >= reloaded


def test_removed_declaration_disappears_from_the_live_dialplan(lab_host, redeploy_after):
    assert {"2011", "2012"} <= live_extensions(lab_host)
    run = deploy(lab_host, extra_vars=declarations(**{"2012": None}))
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    live = live_extensions(lab_host)
    assert "2012" not in live and "2011" in live
    assert "There is no existence of 2012@followme" in asterisk_rx(lab_host, "dialplan show 2012@followme")


def test_disabled_declaration_gets_the_site_normal_handling(lab_host, redeploy_after):
    run = deploy(lab_host, extra_vars=declarations(**{"2002": {**CALLS["followme"]["2002"], "enabled": False}}))
    assert run.ok, run.output
    # Not in the dialplan, or (with the users' switch, followme_toggle_code) only as a switched-off default.
    assert "2002" not in live_extensions(lab_host) or "[disabled]" in asterisk_rx(lab_host,
                                                                                 "dialplan show 2002@followme")
    result = place_call(lab_host, "2002", {"2002": answer(after=1)})
    assert result.answered_by == "2002", result.format()
    assert result.rung == ["2002"], result.format()  # the device alone, as the site's dialplan does


def test_call_in_progress_completes_during_a_deploy(lab_host, redeploy_after):
    results = {}
    caller = threading.Thread(target=lambda: results.setdefault(
        "call", place_call(lab_host, "2003", {"2005": answer(after=2)})))
    caller.start()
    time.sleep(3)  # the call is in the hunt (2004 rings from 2 s to 5 s)
    deployed = time.monotonic()
    run = deploy(lab_host, extra_vars=declarations(**{"2003": None}))
    caller.join(60)
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    assert last_reload(lab_host) <= time.monotonic() - deployed + 1, "the deploy did not reload Asterisk"
    result = results["call"]
    # The call goes on as planned: 2004 from 2 to 5 s, then 2005 answers 2 s later.
    assert result.answered_by == "2005", result.format()
    assert abs(result.invites("2005")[0] - 5) <= 1, result.format()
    assert "2003" not in live_extensions(lab_host)


def test_bad_input_is_named_and_changes_nothing(lab_host):
    files, reloaded = file_state(lab_host), last_reload(lab_host)
    bad = declarations(**{"2003": {**CALLS["followme"]["2003"], "ring_time": "10"},
                          "2004": {**CALLS["followme"]["2004"], "list": ["2005", "2006&PJSIP/666"]}})
    run = deploy(lab_host, extra_vars=bad)
    assert not run.ok
    assert f'{lab_host.name}: extension 2003: ring_time = "10": must be an integer, not a string' in run.output
    assert f'{lab_host.name}: extension 2004: list[1] = "2006&PJSIP/666": not accepted' in run.output
    assert file_state(lab_host) == files
    assert last_reload(lab_host) >= reloaded


def test_a_load_that_is_not_what_was_written_is_rolled_back(lab_host):
    """followme_context named like a context of the site: pbx_config merges the two, so Asterisk runs
    something else than the file says. The module must see it, name it, restore the previous file and reload it."""
    files, revision = file_state(lab_host), asterisk_rx(lab_host, "dialplan show s@followme-revision")
    previous = re.search(r"NoOp\(([0-9a-f]{16})\)", revision).group(1)
    # The controller cannot know the site's contexts; it refuses only outbound/extension contexts that are the
    # role's own, so those point elsewhere here.
    run = deploy(lab_host, extra_vars={"followme_context": "from-internal", "followme_outbound_context": "lab-dest",
                                       "followme_extension_context": "lab-dest"})
    assert not run.ok and run.recap[lab_host.name]["failed"] == 1, run.output
    message = one_line(run.output)
    assert "the new follow-me dialplan did not load (context from-internal also holds lines from extensions.conf" \
        in message, run.output
    assert "a context of that name is defined elsewhere too (a context collision" in message, run.output
    assert (f"the previous files were restored and reloaded, Asterisk runs revision {previous} again (proven)"
            in message), run.output
    assert file_state(lab_host) == files
    assert asterisk_rx(lab_host, "dialplan show s@followme-revision") == revision
    for stray in ("from-internal-revision", "from-internal-call", "from-internal-leg"):
        assert f"There is no existence of '{stray}' context" in asterisk_rx(lab_host, f"dialplan show {stray}")
    assert {"2001", "2012"} <= live_extensions(lab_host)


def test_a_file_asterisk_could_not_read_is_refused_before_writing(lab_host):
    """Asterisk runs as asterisk: a root:root 0640 file would load now from memory but be lost at restart."""
    files, reloaded = file_state(lab_host), last_reload(lab_host)
    run = deploy(lab_host, extra_vars={"followme_file_group": "root"})
    assert not run.ok, run.output
    assert ("extensions_followme.conf would be unreadable by Asterisk, which runs as asterisk:asterisk, "
            "with owner root, group root, mode 0640; nothing was written") in run.output
    assert file_state(lab_host) == files
    assert last_reload(lab_host) >= reloaded


def test_asterisk_down_fails_clearly_and_writes_nothing(lab_host):
    files = file_state(lab_host)
    ssh(lab_host, "asterisk -rx 'core stop now'; sleep 1", check=False)
    try:
        run = deploy(lab_host, extra_vars=declarations(**{"2012": None}))
        assert not run.ok and run.recap[lab_host.name]["failed"] == 1, run.output
        assert "Asterisk is not running" in run.output and "nothing was written" in run.output
        assert file_state(lab_host) == files
    finally:
        start_asterisk(lab_host)
    assert {"2001", "2012"} <= live_extensions(lab_host)


def test_an_unreachable_host_does_not_stop_the_others(lab_host, redeploy_after, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"pbx": {"hosts": {"pbx-gone": {
        "ansible_host": "192.0.2.1", "ansible_ssh_common_args": "-o ConnectTimeout=2"}}}}))
    run = run_playbook("site.yml", (*CALLS_INVENTORY, inventory), limit=f"{lab_host.name},pbx-gone",
                       extra_vars=declarations(**{"2012": None}))
    assert run.recap["pbx-gone"]["unreachable"] == 1, run.output
    assert run.recap[lab_host.name]["changed"] == 1 and run.recap[lab_host.name]["failed"] == 0, run.output
    assert "2012" not in live_extensions(lab_host)


def test_site_config_is_untouched_but_for_one_include_line(lab_host):
    baseline = (ROOT / "lab/asterisk/extensions.conf").read_text()
    deployed = ssh(lab_host, "cat /etc/asterisk/extensions.conf").stdout
    assert deployed == baseline + '#tryinclude "extensions_followme.conf"\n'
    for name in ("pjsip.conf", "voicemail.conf", "modules.conf"):
        local = ROOT / "lab/asterisk" / name
        if local.exists():
            assert ssh(lab_host, f"cat /etc/asterisk/{name}").stdout == local.read_text(), name
    assert ssh(lab_host, f"stat -c '%U:%G %a' {MANAGED}").stdout.strip() == "root:asterisk 640"
    assert ssh(lab_host, f"head -1 {MANAGED}").stdout.startswith("; Managed by Ansible (role followme)")


def one_line(output: str) -> str:
    """Ansible's output with YAML line folding undone, to find a message whole."""
    return re.sub(r"\s*\n\s*", " ", output)


def start_asterisk(host) -> None:
    """Start this lab host's Asterisk again, as the lab does (never `python -m lab up`: it may restart
    other people's hosts), and wait until it is fully booted."""
    if "Asterisk" not in ssh(host, "asterisk -rx 'core show version'", check=False).stdout:
        ssh(host, "asterisk -U asterisk -G asterisk </dev/null >/dev/null 2>&1", check=False)
    deadline = time.monotonic() + 60
    while "Unable to connect" in (ssh(host, "asterisk -rx 'core waitfullybooted' 2>&1", check=False).stdout
                                  or "Unable to connect"):
        assert time.monotonic() < deadline, f"{host.name}: Asterisk did not start again"
        time.sleep(0.5)
