"""Faults on a real PBX, put there over SSH on this worker's lab host and always undone: what is in the place
of the managed files (symlink, FIFO), the directory (read-only, full), the site's file (Latin-1, CRLF, other
spellings of the include line), the owner (unknown group), two runs at once, a frozen Asterisk, a dialplan
changed at the CLI, owner/mode drift, an empty declaration set, a rollback on a host that never had
follow-me, a run killed mid-way.

After each: the message names the cause, the file on disk is the running dialplan (its revision is live and
each of its contexts holds what it says, all from the file), and the PBX takes a follow-me call.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import pytest
from ansible_collections.followme.asterisk.plugins.module_utils.dialplan import counts, revision_of
from ansible_collections.followme.asterisk.plugins.modules.followme_dialplan import parse_context
from labcall import answer, asterisk_rx, place_call, ssh
from test_deploy import CALLS, MANAGED, declarations, deploy, file_state, last_reload, live_extensions, one_line

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("call_declarations", "json_results")]

MAIN = "/etc/asterisk/extensions.conf"
KEEP = "/root/followme-faults"  # where a test keeps the files it puts back
CHANGED = declarations(**{"2003": {**CALLS["followme"]["2003"], "ring_time": 9}})  # any real change
MOUNT = """python3 - {args} <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(rc):
    if rc != 0:
        sys.exit(os.strerror(ctypes.get_errno()))
op, target = sys.argv[1], sys.argv[2].encode()
if op == "ro":  # a read-only bind mount of the directory on itself
    check(libc.mount(target, target, None, 4096, None))
    check(libc.mount(b"none", target, None, 4096 | 32 | 1, None))
elif op == "tmpfs":
    check(libc.mount(b"tmpfs", target, b"tmpfs", 0, sys.argv[3].encode()))
else:
    check(libc.umount2(target, 0))
PY"""


# How many processes have the module's lock file open.
LOCK_OPENED_BY = "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c '/run/lock/followme.lock$' || true"


@pytest.fixture
def json_results(monkeypatch):
    """Task results as JSON, so that messages can be read whole."""
    monkeypatch.setenv("ANSIBLE_CALLBACK_RESULT_FORMAT", "json")


def install_result(run) -> dict:
    """The result of the install task (printed for every outcome with verbose=True, for a failure always)."""
    start = run.output.index("Install the follow-me dialplan")
    return json.JSONDecoder().raw_decode(run.output, run.output.index("=> ", start) + 3)[0]


#: followme_context named like a context of the site's (the controller cannot know the site's contexts; it
#: refuses only outbound/extension contexts that are the role's own, so those point elsewhere here).
COLLIDING = {"followme_context": "from-internal", "followme_outbound_context": "lab-dest",
             "followme_extension_context": "lab-dest"}


def failure(run, host) -> str:
    assert not run.ok and run.recap[host.name]["failed"] == 1, run.output
    return install_result(run)["msg"]


def remote_bytes(host, path) -> bytes:
    return base64.b64decode(ssh(host, f"base64 -w0 {path}").stdout)


def mount(host, *args) -> None:
    ssh(host, MOUNT.format(args=" ".join(args)))


def file_is_the_running_dialplan(host) -> None:
    text = ssh(host, f"cat {MANAGED}").stdout
    assert f"NoOp({revision_of(text)})" in asterisk_rx(host, "dialplan show s@followme-revision")
    for name, expected in counts(text).items():
        state = parse_context(asterisk_rx(host, f"dialplan show {name}"))
        assert state.problem(name, expected) is None, name
        assert state.sources <= {"extensions_followme.conf"}, (name, state.sources)


def takes_a_follow_me_call(host) -> None:
    # 2002: ringall-prim, 2 s pre-ring of 2002 alone, then 2002 and 2003 together: 2003 answers.
    result = place_call(host, "2002", {"2003": answer(after=1)})
    assert result.answered_by == "2003", result.format()
    assert abs(result.invites("2003")[0] - 2) <= 1, result.format()


def working(host) -> None:
    file_is_the_running_dialplan(host)
    takes_a_follow_me_call(host)


# -- owner, group, what stands in place of a managed file -------------------------------------------

def test_unknown_group_fails_and_writes_nothing(lab_host):
    files = file_state(lab_host)
    run = deploy(lab_host, extra_vars={**CHANGED, "followme_file_group": "nosuchgroup"})
    assert failure(run, lab_host) == ("unknown group 'nosuchgroup' on this host (followme_file_group): "
                                      "nothing was written")
    assert file_state(lab_host) == files
    working(lab_host)


@pytest.mark.parametrize("path", [MANAGED, MAIN])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_symlink_or_fifo_in_place_of_a_managed_file_is_refused_unread(lab_host, path, kind):
    ssh(lab_host, f"mkdir -p {KEEP} && cp -p {path} {KEEP}/saved && echo 'SECRET-LINE' > {KEEP}/secret")
    try:
        if kind == "symlink":
            ssh(lab_host, f"ln -sfn {KEEP}/secret {path}")
        else:
            ssh(lab_host, f"rm -f {path} && mkfifo -m 0644 {path}")
        started = time.monotonic()
        run = deploy(lab_host, extra_vars=CHANGED, diff=True)
        assert time.monotonic() - started < 60
        what = f"a symbolic link to {KEEP}/secret" if kind == "symlink" else "a FIFO (named pipe)"
        assert failure(run, lab_host) == (
            f"{path} is {what}, not a regular file: refusing to read or replace it (put a regular file there or "
            "remove it); nothing was written")
        assert "SECRET-LINE" not in run.output
        kept = ssh(lab_host, f"stat -c %F {path}").stdout.strip()
        assert kept == ("symbolic link" if kind == "symlink" else "fifo"), kept
    finally:
        ssh(lab_host, f"rm -f {path} && cp -p {KEEP}/saved {path} && rm -rf {KEEP}")
    working(lab_host)


# -- the directory ------------------------------------------------------------------------------------

def test_a_read_only_directory_changes_nothing(lab_host):
    files, reloaded = file_state(lab_host), last_reload(lab_host)
    mount(lab_host, "ro", "/etc/asterisk")
    try:
        run = deploy(lab_host, extra_vars=CHANGED)
        assert failure(run, lab_host) == (f"could not write {MANAGED}: Read-only file system (EROFS); "
                                          "nothing was changed")
    finally:
        mount(lab_host, "umount", "/etc/asterisk")
    assert file_state(lab_host) == files
    assert last_reload(lab_host) >= reloaded
    working(lab_host)


def test_a_full_directory_changes_nothing(lab_host):
    """A tmpfs over /etc/asterisk with a copy of its files, filled up."""
    files, reloaded = file_state(lab_host), last_reload(lab_host)
    ssh(lab_host, f"rm -rf {KEEP} && cp -a /etc/asterisk {KEEP}")
    mount(lab_host, "tmpfs", "/etc/asterisk", "size=256k,mode=0755,uid=101,gid=101")
    try:
        ssh(lab_host, f"cp -a {KEEP}/. /etc/asterisk/ && (dd if=/dev/zero of=/etc/asterisk/zz-filler bs=4k "
                      "2>/dev/null || true) && test $(df --output=avail /etc/asterisk | tail -1) -eq 0")
        assert file_state(lab_host) == files
        run = deploy(lab_host, extra_vars=CHANGED)
        assert failure(run, lab_host) == (f"could not write {MANAGED}: No space left on device (ENOSPC); "
                                          "nothing was changed")
        assert file_state(lab_host) == files
        assert ssh(lab_host, "ls -A /etc/asterisk | grep -c '^.followme-' || true").stdout.strip() == "0"
    finally:
        mount(lab_host, "umount", "/etc/asterisk")
        ssh(lab_host, f"rm -rf {KEEP}")
    assert file_state(lab_host) == files
    assert last_reload(lab_host) >= reloaded
    working(lab_host)


# -- the site's extensions.conf ---------------------------------------------------------------------

@pytest.fixture
def site_file_put_back(lab_host):
    """extensions.conf exactly as it was (byte for byte, owner and mode), and Asterisk running it."""
    ssh(lab_host, f"mkdir -p {KEEP} && cp -p {MAIN} {KEEP}/extensions.conf")
    yield
    ssh(lab_host, f"cp -p {KEEP}/extensions.conf {MAIN} && rm -rf {KEEP} && asterisk -rx 'module reload pbx_config.so'")


def test_a_latin1_byte_does_not_break_diff_and_is_kept(lab_host, site_file_put_back):
    # A comment with a Latin-1 e-acute (0xE9, not UTF-8) at the end, and the include line gone: the run
    # must add the line, show the change, and keep the byte.
    ssh(lab_host, f"grep -v extensions_followme {MAIN} > {KEEP}/edited && printf '; caf\\351 du coin\\n' "
                  f">> {KEEP}/edited && cat {KEEP}/edited > {MAIN}")
    run = deploy(lab_host, diff=True)
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    assert " ; caf\ufffd du coin\n+#tryinclude \"extensions_followme.conf\"" in run.output, run.output
    assert remote_bytes(lab_host, MAIN).endswith(b'; caf\xe9 du coin\n#tryinclude "extensions_followme.conf"\n')
    working(lab_host)


def test_crlf_and_other_spellings_of_the_include_line_collapse_into_one(lab_host, site_file_put_back):
    spellings = '#include "./extensions_followme.conf"\\n#tryinclude /etc/asterisk/extensions_followme.conf ; again\\n'
    ssh(lab_host, f"grep -v extensions_followme {MAIN} > {KEEP}/edited && printf '{spellings}' >> {KEEP}/edited && "
                  f"sed 's/$/\\r/' {KEEP}/edited > {MAIN}")
    run = deploy(lab_host)
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    data = remote_bytes(lab_host, MAIN)
    assert data.count(b"\r\n") == data.count(b"\n") and data.count(b"extensions_followme") == 1, data
    assert data.endswith(b'\r\n#tryinclude "extensions_followme.conf"\r\n'), data
    again = deploy(lab_host)
    assert again.ok and again.recap[lab_host.name]["changed"] == 0, again.output
    working(lab_host)


# -- two runs at once ---------------------------------------------------------------------------------

def test_two_runs_at_the_same_moment_take_turns_ten_times(lab_host, redeploy_after):
    """Asterisk is paused while two runs with different declarations start, so that both are inside the module
    at the same moment when it goes on; the second must wait for the first's lock and start from its result."""
    variants = [declarations(), CHANGED]
    pid = ssh(lab_host, "cat /run/asterisk/asterisk.pid").stdout.strip()
    for round_ in range(10):
        runs = [None, None]

        def one(index, runs=runs):
            runs[index] = deploy(lab_host, extra_vars=variants[index], verbose=True)

        threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
        ssh(lab_host, f"kill -STOP {pid}")
        try:
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 60
            while ssh(lab_host, LOCK_OPENED_BY).stdout.strip() != "2":  # one holds it, the other waits
                assert time.monotonic() < deadline, "the two runs did not both reach the lock"
                time.sleep(0.2)
        finally:
            ssh(lab_host, f"kill -CONT {pid}")
        for thread in threads:
            thread.join(300)
        for run in runs:
            assert run.ok and run.recap[lab_host.name]["failed"] == 0, f"round {round_}:\n{run.output}"
        waited = [run for run in runs if "for another run of this module on this host" in one_line(run.output)]
        assert len(waited) == 1, f"round {round_}: the runs did not take turns"
        revisions = [install_result(run)["revision"] for run in runs]
        live = re.search(r"NoOp\(([0-9a-f]{16})\)", asterisk_rx(lab_host, "dialplan show s@followme-revision"))
        assert live and live.group(1) == install_result(waited[0])["revision"] and len(set(revisions)) == 2
        file_is_the_running_dialplan(lab_host)
    takes_a_follow_me_call(lab_host)


# -- a frozen Asterisk, a killed run ---------------------------------------------------------------------

@pytest.fixture
def frozen(lab_host):
    """Asterisk stopped with SIGSTOP; always continued afterwards."""
    pid = ssh(lab_host, "cat /run/asterisk/asterisk.pid").stdout.strip()
    assert pid.isdigit()
    ssh(lab_host, f"kill -STOP {pid}")
    try:
        yield pid
    finally:
        ssh(lab_host, f"kill -CONT {pid}")
        asterisk_rx(lab_host, "core waitfullybooted", timeout=60)


def test_a_frozen_asterisk_fails_the_host_and_nothing_is_applied_later(lab_host, frozen):
    files = file_state(lab_host)
    revision = ssh(lab_host, f"grep -o 'NoOp([0-9a-f]*)' {MANAGED}").stdout
    started = time.monotonic()
    run = deploy(lab_host, extra_vars=CHANGED)
    assert failure(run, lab_host) == ("Asterisk does not answer (asterisk -rx 'core waitfullybooted': no answer "
                                      "within 30 s (Asterisk frozen or overloaded)); nothing was written")
    assert 30 <= time.monotonic() - started < 90
    assert file_state(lab_host) == files
    ssh(lab_host, f"kill -CONT {frozen}")
    asterisk_rx(lab_host, "core waitfullybooted", timeout=60)
    time.sleep(3)  # a run left behind would apply now
    assert file_state(lab_host) == files
    assert revision.strip() in asterisk_rx(lab_host, "dialplan show s@followme-revision")
    assert ssh(lab_host, "pgrep -f '^(/usr/sbin/)?asterisk -rx' || true").stdout.strip() == ""
    working(lab_host)


FREEZE_ON_RENAME = """python3 - <<'PY'
import os, signal, time
path = "{path}"
inode = os.stat(path).st_ino
pid = int(open("/run/asterisk/asterisk.pid").read())
print("watching", flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    try:
        if os.stat(path).st_ino != inode:
            os.kill(pid, signal.SIGSTOP)
            print("stopped", flush=True)
            break
    except FileNotFoundError:
        pass
    time.sleep(0.0002)
PY""".replace("{path}", MANAGED)


def test_asterisk_frozen_right_after_the_write_is_rolled_back_on_disk(lab_host):
    """Asterisk is stopped the moment the new file is renamed into place, so the reload hangs: the run must
    restore the previous files and say that Asterisk could not be asked to reload them."""
    files = file_state(lab_host)
    revision = re.search(r"NoOp\(([0-9a-f]{16})\)", asterisk_rx(lab_host, "dialplan show s@followme-revision")).group(1)
    pid = ssh(lab_host, "cat /run/asterisk/asterisk.pid").stdout.strip()
    watcher = {}
    thread = threading.Thread(target=lambda: watcher.setdefault("out", ssh(lab_host, FREEZE_ON_RENAME, timeout=200)))
    thread.start()
    try:
        time.sleep(2)  # the watcher is running
        run = deploy(lab_host, extra_vars=CHANGED)
        thread.join(200)
    finally:
        ssh(lab_host, f"kill -CONT {pid}")
    assert "stopped" in watcher["out"].stdout
    message = failure(run, lab_host)
    assert message.startswith("Asterisk froze during the reload (asterisk -rx '"), message
    # Stopped before the reload was sent (the usual case: the watcher polls every 0.2 ms), or while it was.
    assert message.endswith((
        "; the previous files were restored (Asterisk had not been reloaded)",
        "ROLLBACK INCOMPLETE: Asterisk froze during the rollback (asterisk -rx 'core waitfullybooted': no answer "
        "within 30 s (Asterisk frozen or overloaded)), so the restored dialplan is not proven to run: the previous "
        "files are on disk and the next reload or start loads them")), message
    assert file_state(lab_host) == files
    asterisk_rx(lab_host, "core waitfullybooted", timeout=60)
    time.sleep(3)  # whatever Asterisk had queued runs now; a module left behind would apply now
    assert file_state(lab_host) == files
    assert f"NoOp({revision})" in asterisk_rx(lab_host, "dialplan show s@followme-revision")
    working(lab_host)


def test_a_run_killed_mid_way_leaves_nothing_behind(lab_host, frozen):
    """The module waits on the frozen Asterisk; a SIGTERM to it ends the run cleanly: a message, nothing in
    /tmp (Ansible's payload directory), no temporary file in /etc/asterisk, the lock released."""
    files = file_state(lab_host)
    results = {}
    runner = threading.Thread(target=lambda: results.setdefault("run", deploy(lab_host, extra_vars=CHANGED)))
    runner.start()
    deadline = time.monotonic() + 60
    pid = ""
    while not pid:
        assert time.monotonic() < deadline, "the module never took the lock"
        time.sleep(0.5)
        pid = ssh(lab_host, "p=$(cat /run/lock/followme.lock 2>/dev/null); test -n \"$p\" && test -d /proc/$p && "
                            "ls -d /tmp/ansible_*_payload_* >/dev/null 2>&1 && "
                            "echo $p || true").stdout.strip()
    ssh(lab_host, f"kill -TERM {pid}")
    runner.join(120)
    run = results["run"]
    assert failure(run, lab_host) == ("the run was interrupted by SIGTERM before it changed anything; "
                                      "nothing was changed")
    assert ssh(lab_host, "ls -A /tmp; ls -A /etc/asterisk | grep '^.followme-' || true").stdout.strip() == ""
    assert file_state(lab_host) == files
    assert ssh(lab_host, f"test -d /proc/{pid} && echo alive || true").stdout.strip() == ""
    ssh(lab_host, f"kill -CONT {frozen}")
    asterisk_rx(lab_host, "core waitfullybooted", timeout=60)
    after = deploy(lab_host)  # the lock was released with the process
    assert after.ok and after.recap[lab_host.name]["changed"] == 0, after.output
    working(lab_host)


# -- drift ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "cause"), [
    ("dialplan remove extension 2001@followme",
     "context followme holds 23 extensions and 46 priorities instead of 24 and 48"),
    ("dialplan add extension 2999,1,Hangup() into followme",
     "context followme also holds lines from pbx_config: a context of that name is defined elsewhere too"),
])
def test_a_dialplan_changed_at_the_cli_is_repaired_by_the_next_run(lab_host, command, cause):
    asterisk_rx(lab_host, command)
    files = file_state(lab_host)
    started = time.monotonic()
    run = deploy(lab_host, verbose=True)
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    assert f"the running dialplan differs from {MANAGED} ({cause}" in one_line(run.output), run.output
    assert install_result(run)["reloaded"] is True and install_result(run)["files"] == []
    assert last_reload(lab_host) <= time.monotonic() - started + 1
    assert file_state(lab_host) == files
    assert "2001" in live_extensions(lab_host) and "2999" not in live_extensions(lab_host)
    again = deploy(lab_host)
    assert again.ok and again.recap[lab_host.name]["changed"] == 0, again.output
    working(lab_host)


def test_owner_and_mode_drift_is_repaired_without_a_reload(lab_host):
    ssh(lab_host, f"chown asterisk:root {MANAGED} && chmod 0604 {MANAGED}")
    time.sleep(1.5)  # so that a reload during the run would show in "Last reload" (whole seconds)
    before = last_reload(lab_host)
    started = time.monotonic()
    run = deploy(lab_host, diff=True, verbose=True)
    elapsed = time.monotonic() - started
    assert run.ok and run.recap[lab_host.name]["changed"] == 1, run.output
    assert "-owner asterisk, group root, mode 0604" in run.output and "+owner root, group asterisk, mode 0640" in \
        run.output, run.output
    assert install_result(run)["reloaded"] is False and install_result(run)["files"] == [MANAGED]
    assert last_reload(lab_host) >= before + int(elapsed), "Asterisk reloaded for an owner/mode change"
    assert ssh(lab_host, f"stat -c '%U:%G %a' {MANAGED}").stdout.strip() == "root:asterisk 640"
    working(lab_host)


# -- refusing to wipe --------------------------------------------------------------------------------

def test_an_empty_declaration_set_does_not_wipe_follow_me_unless_asked(lab_host, redeploy_after):
    files = file_state(lab_host)
    check = deploy(lab_host, extra_vars={"followme": {}}, check=True)
    assert failure(check, lab_host).startswith(
        f"would refuse to replace the follow-me dialplan of 24 extension(s) in {MANAGED} with an empty one")
    run = deploy(lab_host, extra_vars={"followme": {}})
    assert failure(run, lab_host) == (
        f"refusing to replace the follow-me dialplan of 24 extension(s) in {MANAGED} with an empty one: this host "
        "has no enabled declarations (a misspelt variable or an inventory that did not load?). To remove follow-me "
        "from it on purpose, set followme_allow_empty: true; nothing was changed")
    assert file_state(lab_host) == files
    working(lab_host)
    wiped = deploy(lab_host, extra_vars={"followme": {}, "followme_allow_empty": True})
    assert wiped.ok and wiped.recap[lab_host.name]["changed"] == 1, wiped.output
    assert live_extensions(lab_host) == set()
    file_is_the_running_dialplan(lab_host)


# -- leftovers ---------------------------------------------------------------------------------------

def test_a_rollback_on_a_host_that_never_had_follow_me_leaves_no_context_live(lab_host, redeploy_after):
    ssh(lab_host, f"rm -f {MANAGED} && sed -i '/extensions_followme/d' {MAIN} && "
                  "asterisk -rx 'module reload pbx_config.so'")
    assert "There is no existence of 'followme' context" in asterisk_rx(lab_host, "dialplan show followme")
    files = ssh(lab_host, f"ls /etc/asterisk; sha256sum {MAIN}").stdout
    run = deploy(lab_host, extra_vars=COLLIDING)
    message = failure(run, lab_host)
    assert message.startswith("the new follow-me dialplan did not load (context from-internal also holds lines "
                              "from extensions.conf"), message
    assert message.endswith("the previous files were restored and reloaded, Asterisk runs no follow-me dialplan "
                            "again (proven)"), message
    assert ssh(lab_host, f"ls /etc/asterisk; sha256sum {MAIN}").stdout == files
    for name in ("from-internal-revision", "from-internal-call", "from-internal-leg", "from-internal-confirm",
                 "from-internal-taken", "from-internal-prefix", "from-internal-predial"):
        assert f"There is no existence of '{name}' context" in asterisk_rx(lab_host, f"dialplan show {name}")
    assert "extensions_followme" not in asterisk_rx(lab_host, "dialplan show from-internal")
    again = deploy(lab_host)
    assert again.ok and again.recap[lab_host.name]["changed"] == 1, again.output
    working(lab_host)
