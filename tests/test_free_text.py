"""Free text deployed with validation skipped never runs anything on the PBX (issue 11, item 8).

The install task is started directly (`--start-at-task`, so followme_validate never runs), as a user
calling the module by itself would. Values built to break out of the dialplan are refused by the
renderer and nothing changes; the most dangerous values it accepts, and a hostile caller name sent
over SIP, reach a real call as plain text: the device gets them verbatim, `SHELL(touch ...)` creates
no file, and Asterisk's log shows no expression or function evaluation error.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml
from deploy import CALLS_INVENTORY, ROOT
from labcall import answer, asterisk_rx, place_call, ssh

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("call_declarations")]

INSTALL_TASK = "Install the follow-me dialplan, reload Asterisk on change, prove it or roll back"
MANAGED = "/etc/asterisk/extensions_followme.conf"
LOG = "/var/log/asterisk/messages"
CANARY = "/tmp/followme-pwned"
CALLS = yaml.safe_load((ROOT / "tests/inventories/calls/group_vars/pbx/followme.yml").read_text())
SHELL = f"SHELL(touch {CANARY})"
BREAKOUTS = {
    "cid_name_prefix": f'" = "" | {SHELL} | "',
    "alert_info": f"<http://x>;a=${{{SHELL}}}",
}
MORE_BREAKOUTS = [f"$[1|{SHELL}]", "a\nexten => 2001,1,System(touch /tmp/followme-pwned)", "a ;--", "a,b", "a)"]
# The most dangerous values the patterns accept: every allowed punctuation character.
ACCEPTED = {"cid_name_prefix": "FM: +-._", "alert_info": "<http://x/a?b=1&c=%24%7B>;info=a;x=~+-@_."}
HOSTILE_CALLER = f'a"|{SHELL}|"${{{SHELL}}}'  # (SIPp reads [...] as its own keywords)


def install_only(host, followme: dict):
    """site.yml from the install task on: validation skipped."""
    command = [str(os.path.join(os.path.dirname(sys.executable), "ansible-playbook")), str(ROOT / "site.yml"),
               "-i", str(CALLS_INVENTORY[0]), "-i", str(CALLS_INVENTORY[1]), "--limit", host.name,
               "--start-at-task", INSTALL_TASK]
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as extra:
        json.dump({"followme": followme}, extra)
        extra.flush()
        done = subprocess.run([*command, "-e", f"@{extra.name}"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    assert "Validate the follow-me declarations" not in output, output  # validation really was skipped
    return done.returncode, output


def with_2001(**fields) -> dict:
    followme = copy.deepcopy(CALLS["followme"])
    followme["2001"].update(fields)
    return followme


def log_size(host) -> int:
    return int(ssh(host, f"stat -c %s {LOG}").stdout)


def evaluation_errors(host, since: int) -> list[str]:
    text = ssh(host, f"tail -c +{since + 1} {LOG}", timeout=30).stdout
    return [line for line in text.splitlines()
            if ("WARNING" in line or "ERROR" in line)
            and any(word in line.lower() for word in ("expr", "syntax", "shell", "func_", "pbx_functions"))]


@pytest.fixture
def canary(lab_host):
    ssh(lab_host, f"rm -f {CANARY}")
    # The canary can fire: SHELL() runs on this PBX when Asterisk does evaluate it.
    assert f"Result: {lab_host.name}" in asterisk_rx(lab_host, "dialplan eval function SHELL(hostname)")
    yield
    assert ssh(lab_host, f"test ! -e {CANARY}", check=False).returncode == 0, f"{CANARY} was created: code ran"


@pytest.mark.parametrize("field", sorted(BREAKOUTS))
def test_breakout_values_are_refused_by_the_renderer_with_validation_skipped(lab_host, canary, field,
                                                                             redeploy_after):
    before = ssh(lab_host, f"sha256sum {MANAGED}").stdout
    for value in [BREAKOUTS[field], *MORE_BREAKOUTS]:
        rc, output = install_only(lab_host, with_2001(**{field: value}))
        assert rc != 0, output
        assert f"refusing to write {field}" in output and "nothing was written" in output, output
    assert ssh(lab_host, f"sha256sum {MANAGED}").stdout == before


def test_accepted_free_text_and_a_hostile_caller_name_are_plain_text_in_a_real_call(lab_host, canary,
                                                                                    redeploy_after):
    rc, output = install_only(lab_host, with_2001(**ACCEPTED))
    assert rc == 0, output
    since = log_size(lab_host)
    result = place_call(lab_host, "2001", {"2002": answer(after=0.5)}, caller_name=HOSTILE_CALLER)
    assert result.answered_by == "2002", result.format()
    (invite,) = result.invite_events("2002")
    assert invite.headers.get("Alert-Info") == ACCEPTED["alert_info"], result.format()
    assert invite.from_name.startswith(ACCEPTED["cid_name_prefix"]), result.format()
    assert SHELL in invite.from_name, result.format()  # the caller's name arrived as text, not evaluated
    assert evaluation_errors(lab_host, since) == []

