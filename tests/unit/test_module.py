"""The followme_dialplan module without a PBX: its file handling, lock, time limits, and every error and
rollback path of the transaction (plan, lock, write, reload, prove, roll back).

Asterisk itself is proven on the lab (tests/test_deploy.py, tests/test_faults.py). Here the error paths are
driven by a scripted stand-in for `asterisk -rx` (ScriptedAsterisk, which answers from the files on disk as
pbx_config would load them) or, for the time limits, by a fake `asterisk` executable.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import grp
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common import warnings as common_warnings
from ansible_collections.followme.asterisk.plugins.module_utils import digest as digest_module
from ansible_collections.followme.asterisk.plugins.module_utils.dialplan import (
    FILE_NAME,
    Settings,
    counts,
    input_stamp,
    render,
    revision_of,
)
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plans
from ansible_collections.followme.asterisk.plugins.modules import followme_dialplan as fm
from compat import patch_module_args

LINE = b'#tryinclude "extensions_followme.conf"'
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in {g.gr_name for g in grp.getgrall()} else 65534
DECLARATION = {"list": ["2002", "909121234567#"], "initial_ring_time": 2, "strategy": "ringall", "ring_time": 3,
               "no_answer": "hangup", "enabled": True, "confirm_calls": False, "cid_name_prefix": None,
               "alert_info": None, "music_on_hold": None, "announcement": None}
SETTINGS = Settings(context="followme", device="PJSIP/{extension}", outbound_context="from-internal",
                    extension_context="from-internal", voicemail_context="default", confirm_prompt="followme/options",
                    too_late_prompt="followme/sorry", confirm_timeout=5, toggle_code="*21")
SITE = b"[from-internal]\nexten => _20XX,1,Dial(PJSIP/${EXTEN})\n"


def rendered(*extensions: str) -> str:
    """The file make_plan writes for these extensions (stamped as it stamps it)."""
    declarations = {e: dict(DECLARATION) for e in extensions}
    return render(build_plans(declarations, with_disabled=True), SETTINGS,
                  input_stamp(declarations, SETTINGS, with_disabled=True))


# -- the include line -----------------------------------------------------------------------------

@pytest.mark.parametrize(("site", "expected"), [
    (b"[from-internal]\nexten => 1,1,Hangup()\n", b"[from-internal]\nexten => 1,1,Hangup()\n" + LINE + b"\n"),
    (b"[from-internal]\nexten => 1,1,Hangup()", b"[from-internal]\nexten => 1,1,Hangup()\n" + LINE + b"\n"),
    (b"", LINE + b"\n"),
    (b"[a]\n" + LINE + b"\n[b]\n", b"[a]\n" + LINE + b"\n[b]\n"),
    (b'[a]\n#include "extensions_followme.conf"\n[b]\n', b"[a]\n" + LINE + b"\n[b]\n"),
    (b"[a]\n  #include extensions_followme.conf  \n", b"[a]\n" + LINE + b"\n"),
    (b'[a]\n#include "extensions_followme.conf.bak"\n',
     b'[a]\n#include "extensions_followme.conf.bak"\n' + LINE + b"\n"),
    # CRLF: recognised, and the file's line endings kept (an added line too).
    (b"[a]\r\n#tryinclude \"extensions_followme.conf\"\r\n[b]\r\n", b"[a]\r\n" + LINE + b"\r\n[b]\r\n"),
    (b"[a]\r\nexten => 1,1,Hangup()\r\n", b"[a]\r\nexten => 1,1,Hangup()\r\n" + LINE + b"\r\n"),
    # Any spelling of the path that is the managed file; duplicates collapse into the first one.
    (b'#include "./extensions_followme.conf"\n[a]\n', LINE + b"\n[a]\n"),
    (b"#include <extensions_followme.conf> ; follow-me\n", LINE + b"\n"),
    (b'[a]\n#include "{dir}/extensions_followme.conf"\n#tryinclude "{dir}//x/../extensions_followme.conf"\n'
     b'#include extensions_followme.conf\r\n[b]\n', b"[a]\n" + LINE + b"\n[b]\n"),
    # Not the managed file, or not a directive: left alone.
    (b'#include "other/extensions_followme.conf"\n', b'#include "other/extensions_followme.conf"\n' + LINE + b"\n"),
    (b';#include "extensions_followme.conf"\n', b';#include "extensions_followme.conf"\n' + LINE + b"\n"),
    # A byte that is not UTF-8 (Latin-1 e-acute) stays as it was.
    (b"; caf\xe9\n[a]\n", b"; caf\xe9\n[a]\n" + LINE + b"\n"),
])
def test_one_managed_include_line_and_nothing_else(tmp_path, site, expected):
    site = site.replace(b"{dir}", os.fsencode(tmp_path))
    assert fm.with_include(site, str(tmp_path)) == expected
    assert fm.with_include(expected, str(tmp_path)) == expected


def test_an_include_through_a_linked_directory_is_the_managed_file(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "etc")
    site = f'#include "{tmp_path}/link/extensions_followme.conf"\n'.encode()
    assert fm.with_include(site, str(tmp_path / "etc")) == LINE + b"\n"


# -- reading the managed paths ----------------------------------------------------------------------

def test_a_regular_file_is_read_as_bytes_with_its_attributes(tmp_path):
    path = tmp_path / "extensions.conf"
    path.write_bytes(b"; caf\xe9\n")
    os.chmod(path, 0o604)
    state = fm.read_file(str(path))
    assert state.data == b"; caf\xe9\n"
    assert state.attributes == fm.Attributes(os.getuid(), os.getgid(), 0o604)
    assert fm.read_file(str(tmp_path / "missing")).data is None


def test_a_symlink_is_refused_and_never_read(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:SECRET-HASH:19000::::::\n")
    link = tmp_path / FILE_NAME
    link.symlink_to(secret)
    with pytest.raises(fm.Failure) as failure:
        fm.read_file(str(link))
    assert f"{link} is a symbolic link to {secret}, not a regular file" in str(failure.value)
    assert "nothing was written" in str(failure.value)
    assert "SECRET" not in str(failure.value)


def test_a_fifo_is_refused_at_once_without_blocking(tmp_path):
    fifo = tmp_path / "extensions.conf"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(fm.Failure, match="is a FIFO \\(named pipe\\), not a regular file"):
        fm.read_file(str(fifo))
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("path", "kind"), [("/dev/null", "a character device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path, kind):
    with pytest.raises(fm.Failure, match=f"{path} is {kind}, not a regular file"):
        fm.read_file(path)


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    big = tmp_path / "extensions.conf"
    big.write_bytes(b"x" * 101)
    with pytest.raises(fm.Failure, match="is 101 bytes, more than any dialplan file \\(100 bytes\\)"):
        fm.read_file(str(big), limit=100)
    assert fm.read_file(str(big), limit=101).data == b"x" * 101


# -- owner, group, mode -----------------------------------------------------------------------------

def test_unknown_owner_or_group_fails_before_anything_is_written():
    with pytest.raises(fm.Failure, match="unknown group 'no-such-group-here' on this host .*nothing was written"):
        fm.resolve_attributes("root", "no-such-group-here", "0640")
    with pytest.raises(fm.Failure, match="unknown owner 'no-such-user-here' on this host .*nothing was written"):
        fm.resolve_attributes("no-such-user-here", "root", "0640")
    assert fm.resolve_attributes("0", str(NOGROUP), "0640") == fm.Attributes(0, NOGROUP, 0o640)


@pytest.mark.parametrize(("mode", "bits"), [("0640", 0o640), ("640", 0o640), (0o640, 0o640), ("0600", 0o600)])
def test_octal_modes(mode, bits):
    assert fm.mode_bits(mode) == bits


@pytest.mark.parametrize(("mode", "message"), [
    ("u=rw,g=r", "not an octal mode"), (True, "not an octal mode"), ("0o640", "not an octal mode"),
    ("0664", "would let others than the owner write"), ("0646", "would let others than the owner write"),
    (640, "octal 1200"), ("04640", "not an octal mode"),
])
def test_unsafe_or_unreadable_modes_are_refused(mode, message):
    with pytest.raises(fm.Failure, match=message):
        fm.mode_bits(mode)


def test_asterisk_must_be_able_to_read_the_file():
    ids = (101, 101, {20, 29})  # asterisk:asterisk, groups dialout, audio
    assert fm.cannot_read(ids, fm.Attributes(0, 101, 0o640)) is None
    assert fm.cannot_read(ids, fm.Attributes(0, 29, 0o640)) is None
    assert "mode 0640" in fm.cannot_read(ids, fm.Attributes(0, 0, 0o640))
    assert "mode 0600" in fm.cannot_read(ids, fm.Attributes(0, 101, 0o600))
    assert fm.cannot_read((0, 0, set()), fm.Attributes(0, 0, 0o600)) is None  # Asterisk as root


# -- writing --------------------------------------------------------------------------------------

def test_the_temporary_file_has_its_final_owner_group_and_mode_before_the_rename(tmp_path, monkeypatch):
    seen = {}
    real_rename = os.rename

    def rename(source, target):
        st = os.stat(source)
        seen[target] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), open(source, "rb").read())
        real_rename(source, target)

    monkeypatch.setattr(fm.os, "rename", rename)
    target = tmp_path / FILE_NAME
    fm.commit(fm.stage(str(target), b"; x\n", fm.Attributes(0, NOGROUP, 0o640)), str(target))
    assert seen[str(target)] == (0, NOGROUP, 0o640, b"; x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


@pytest.mark.parametrize(("where", "code", "words"), [
    ("mkstemp", errno.EROFS, "Read-only file system (EROFS)"),
    ("write", errno.ENOSPC, "No space left on device (ENOSPC)"),
])
def test_a_read_only_or_full_directory_changes_nothing(tmp_path, monkeypatch, where, code, words):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    asterisk = ScriptedAsterisk(tmp_path)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "mkstemp":
        monkeypatch.setattr(fm.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(fm.os, "write", fail)
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert str(failure.value) == f"could not write {plan.managed_path}: {words}; nothing was changed"
    assert files.snapshot() == files.original
    assert asterisk.commands == []  # not even a reload


def test_a_failed_second_rename_restores_the_first_file(tmp_path, monkeypatch):
    files = Files(tmp_path, managed=rendered("2001"), site=SITE)  # extensions.conf gets the include line
    plan = files.plan("2001", "2002")
    real_rename = os.rename

    def rename(source, target):
        if target.endswith("extensions.conf") and ".followme-" in source:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        real_rename(source, target)

    monkeypatch.setattr(fm.os, "rename", rename)
    with pytest.raises(fm.Failure) as failure:
        files.transaction(ScriptedAsterisk(tmp_path), plan).run()
    assert str(failure.value).startswith(f"could not rename the new {plan.main_path} into place: Device or resource")
    assert str(failure.value).endswith("the previous files were restored (Asterisk had not been reloaded)")
    assert files.snapshot() == files.original


# -- reload, prove, roll back ----------------------------------------------------------------------

class ScriptedAsterisk(fm.Asterisk):
    """Answers `asterisk -rx` for unit tests of error paths: a reload loads the managed file from disk, as
    pbx_config would (or not, or only partly, as a test asks); `dialplan show` answers from what is loaded."""

    def __init__(self, directory, loads=True, on=None):
        super().__init__("asterisk", 5, fm.Deadline(60))
        self.directory = directory
        self.loads = loads  # False: a reload changes nothing; a callable: text -> the text Asterisk runs
        self.on = on or {}  # command -> exception to raise, or callable run before answering
        self.loaded = self._on_disk()
        self.commands = []

    def _on_disk(self) -> str:
        path = self.directory / FILE_NAME
        return path.read_text() if path.exists() else ""

    def rx(self, command, bounded=True):
        self.commands.append(command)
        action = self.on.get(command)
        if isinstance(action, BaseException):
            raise action
        if callable(action):
            action()
        if command == fm.RELOAD and self.loads:
            text = self._on_disk()
            self.loaded = self.loads(text) if callable(self.loads) else text
        if command.startswith("dialplan show "):
            return self.show(command.split()[-1])
        return ""

    def show(self, what: str) -> str:
        name = what.rsplit("@", maxsplit=1)[-1]
        found = counts(self.loaded) if self.loaded else {}
        if name not in found:
            return f"There is no existence of '{name}' context\nCommand 'dialplan show {what}' failed.\n"
        if what.startswith("s@"):
            return (f"[ Context '{name}' created by 'pbx_config' ]\n  's' => 1. NoOp({revision_of(self.loaded)}) "
                    f"[{FILE_NAME}:9]\n\n-= 1 extension (1 priority) in 1 context. =-\n")
        extensions, priorities = found[name]
        return (f"[ Context '{name}' created by 'pbx_config' ]\n  '1' => 1. NoOp() [{FILE_NAME}:4]\n\n"
                f"-= {extensions} extensions ({priorities} priorities) in 1 context. =-\n")


class Files:
    """A config directory with a managed file and extensions.conf, and what the module planned for it."""

    def __init__(self, directory, managed: str | None, site: bytes = SITE + LINE + b"\n", mode=0o640):
        self.directory = directory
        (directory / "extensions.conf").write_bytes(site)
        os.chmod(directory / "extensions.conf", 0o644)
        if managed is not None:
            (directory / FILE_NAME).write_text(managed)
            os.chown(directory / FILE_NAME, 0, NOGROUP)
            os.chmod(directory / FILE_NAME, mode)
        self.original = self.snapshot()

    def snapshot(self) -> dict:
        result = {}
        for path in sorted(self.directory.iterdir()):
            st = path.lstat()
            result[path.name] = (path.read_bytes(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        return result

    def plan(self, *extensions: str, context="followme", include_file="extensions.conf") -> fm.Plan:
        return fm.make_plan(dict(declarations={e: dict(DECLARATION) for e in extensions}, context=context,
                                 device="PJSIP/{extension}", outbound_context="from-internal",
                                 extension_context="from-internal", voicemail_context="default",
                                 confirm_prompt="followme/options", too_late_prompt="followme/sorry",
                                 confirm_timeout=5, toggle_code="*21", config_dir=str(self.directory),
                                 include_file=include_file,
                                 owner="root",
                                 group=str(NOGROUP), mode="0640"))

    def transaction(self, asterisk, plan, deadline=None, signals=None) -> fm.Transaction:
        before = {path: fm.read_file(path) for path in (plan.managed_path, plan.main_path)}
        return fm.Transaction(asterisk, plan, before, fm.compare(plan, before), deadline=deadline or fm.Deadline(60),
                              signals=signals)


def test_a_proven_reload(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    asterisk = ScriptedAsterisk(tmp_path)
    transaction = files.transaction(asterisk, plan)
    transaction.run()
    assert (tmp_path / FILE_NAME).read_text() == plan.text
    assert transaction.reload_sent and asterisk.commands.count(fm.RELOAD) == 1
    assert fm.prove(asterisk, plan.text) is None


def test_a_load_that_is_not_what_was_written_is_rolled_back_and_the_old_one_proven(tmp_path):
    old = rendered("2001")
    files = Files(tmp_path, managed=old)
    plan = files.plan("2001", "2002")
    # The new file loads partly (a priority missing), the old one whole.
    asterisk = ScriptedAsterisk(tmp_path, loads=lambda text: text if text == old else text.replace(
        " same => n,Hangup()\n", "", 1))
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert str(failure.value) == (
        "the new follow-me dialplan did not load (context followme holds 2 extensions and 3 priorities instead of "
        f"2 and 4); the previous files were restored and reloaded, Asterisk runs revision {revision_of(old)} again "
        "(proven)")
    assert files.snapshot() == files.original  # content, owner, group and mode
    assert asterisk.commands.count(fm.RELOAD) == 2


def test_a_context_collision_is_named(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    asterisk = ScriptedAsterisk(tmp_path)
    real_show = asterisk.show
    asterisk.show = lambda what: (real_show(what).replace("\n\n-=", "\n  '_X.' => 1. Hangup() [extensions.conf:3]"
                                                          "\n\n-=") if what == "followme" and
                                  asterisk.loaded == plan.text else real_show(what))
    with pytest.raises(fm.Failure, match="context followme also holds lines from extensions.conf: a context of that "
                                         "name is defined elsewhere too \\(a context collision"):
        files.transaction(asterisk, plan).run()
    assert files.snapshot() == files.original


@pytest.mark.parametrize("raised", [SystemExit(1), KeyboardInterrupt(), fm.Interrupted("SIGTERM"),
                                    RuntimeError("a bug")])
def test_nothing_in_write_reload_prove_can_skip_the_rollback(tmp_path, raised):
    """fail_json raises SystemExit, a signal Interrupted: neither is an Exception, neither may skip it."""
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    asterisk = ScriptedAsterisk(tmp_path)

    def once():
        del asterisk.on["dialplan show followme"]
        raise raised

    asterisk.on["dialplan show followme"] = once
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert "the previous files were restored and reloaded" in str(failure.value)
    if isinstance(raised, fm.Interrupted):
        assert str(failure.value).startswith("the run was interrupted by SIGTERM;")
    assert files.snapshot() == files.original


def test_a_real_sigterm_during_the_reload_rolls_back(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    signals = fm.Signals().install()
    try:
        asterisk = ScriptedAsterisk(tmp_path, on={fm.RELOAD: lambda: os.kill(os.getpid(), signal.SIGTERM)})
        with pytest.raises(fm.Failure, match="^the run was interrupted by SIGTERM; the previous files were restored"):
            files.transaction(asterisk, plan, signals=signals).run()
    finally:
        for number in fm.SIGNALS:
            signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
    assert files.snapshot() == files.original


def test_a_signal_during_the_rollback_waits_for_it(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    signals = fm.Signals().install()
    try:
        asterisk = ScriptedAsterisk(tmp_path, loads=lambda text: "" if text == plan.text else text)
        reloads = []

        def second_reload():
            reloads.append(1)
            if len(reloads) == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        asterisk.on = {fm.RELOAD: second_reload}
        with pytest.raises(fm.Failure) as failure:
            files.transaction(asterisk, plan, signals=signals).run()
    finally:
        for number in fm.SIGNALS:
            signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
    assert str(failure.value).endswith("(proven); SIGTERM arrived during the rollback, which was finished first")
    assert files.snapshot() == files.original


def test_a_file_someone_else_changed_meanwhile_is_not_rolled_back(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    theirs = rendered("2009")
    asterisk = ScriptedAsterisk(tmp_path, loads=False,
                                on={fm.RELOAD: lambda: (tmp_path / FILE_NAME).write_text(theirs)})
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert f"{plan.managed_path} was changed by someone else during this run, so it was left as it is" in str(
        failure.value)
    assert (tmp_path / FILE_NAME).read_text() == theirs


def test_a_rollback_on_a_host_that_never_had_follow_me_leaves_no_context_of_it(tmp_path):
    files = Files(tmp_path, managed=None, site=SITE)
    plan = files.plan("2001")
    asterisk = ScriptedAsterisk(tmp_path, loads=lambda text: text.replace(" same => n,Hangup()\n", "", 1))
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert str(failure.value).endswith(
        "the previous files were restored and reloaded, Asterisk runs no follow-me dialplan again (proven)")
    assert files.snapshot() == files.original  # no managed file, no include line
    assert all("There is no existence" in asterisk.show(name) for name in counts(plan.text))


def test_a_context_still_live_after_the_rollback_is_reported(tmp_path):
    files = Files(tmp_path, managed=None, site=SITE)
    plan = files.plan("2001")
    # The new file loads partly; the reload of the restored files drops the revision context only.
    asterisk = ScriptedAsterisk(tmp_path)
    asterisk.loads = lambda text: (text.replace(" same => n,Hangup()\n", "", 1) if text
                                   else asterisk.loaded.split("[followme-revision]")[0])
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert "ROLLBACK INCOMPLETE: contexts followme, followme-call, followme-leg" in str(failure.value)
    assert "are still live after the reload" in str(failure.value)


def test_a_frozen_asterisk_during_the_reload(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    frozen = fm.AsteriskUnavailable(fm.RELOAD, "no answer within 5 s (Asterisk frozen or overloaded)", frozen=True)
    asterisk = ScriptedAsterisk(tmp_path, on={fm.RELOAD: frozen})
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    message = str(failure.value)
    assert message.startswith("Asterisk froze during the reload (asterisk -rx 'module reload pbx_config.so': no answer")
    assert message.endswith("ROLLBACK INCOMPLETE: Asterisk froze during the rollback (asterisk -rx 'module reload "
                            "pbx_config.so': no answer within 5 s (Asterisk frozen or overloaded)), so the restored "
                            "dialplan is not proven to run: the previous files are on disk and the next reload or "
                            "start loads them")
    assert files.snapshot() == files.original


def test_asterisk_dying_during_the_reload(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    down = fm.AsteriskUnavailable("dialplan show s@followme-revision", "Unable to connect to remote asterisk")
    asterisk = ScriptedAsterisk(tmp_path, on={"dialplan show s@followme-revision": down,
                                              "core waitfullybooted": None})
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan).run()
    assert str(failure.value).startswith("Asterisk died or stopped during the reload (asterisk -rx 'dialplan show")
    assert files.snapshot() == files.original


def test_the_deadline_stops_the_run_before_it_reloads(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"))
    plan = files.plan("2001", "2002")
    now = [0.0]
    deadline = fm.Deadline(10, clock=lambda: now[0])
    asterisk = ScriptedAsterisk(tmp_path, on={"core waitfullybooted": lambda: now.__setitem__(0, 11)})
    with pytest.raises(fm.Failure) as failure:
        files.transaction(asterisk, plan, deadline=deadline).run()
    assert str(failure.value) == ("the run's time limit (10 s) passed before reloading the dialplan; the previous "
                                  "files were restored (Asterisk had not been reloaded)")
    assert fm.RELOAD not in asterisk.commands
    assert files.snapshot() == files.original


def test_drift_repaired_by_a_reload_alone(tmp_path):
    files = Files(tmp_path, managed=rendered("2001", "2002"))
    plan = files.plan("2001", "2002")
    asterisk = ScriptedAsterisk(tmp_path)
    asterisk.loaded = plan.text.replace("exten => 2002,1,", "exten => 2002x,1,").replace(" same => n,Hangup()\n", "", 1)
    assert fm.prove(asterisk, plan.text) == ("context followme holds 2 extensions and 3 priorities instead of 2 and 4")
    transaction = files.transaction(asterisk, plan)
    assert not transaction.change.contents
    transaction.run()
    assert asterisk.commands.count(fm.RELOAD) == 1 and fm.prove(asterisk, plan.text) is None


# -- comparing and refusing ---------------------------------------------------------------------

def test_owner_or_mode_drift_alone_is_an_attribute_change(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"), mode=0o644)
    plan = files.plan("2001")
    before = {path: fm.read_file(path) for path in (plan.managed_path, plan.main_path)}
    change = fm.compare(plan, before)
    assert change.contents == {} and change.paths == [plan.managed_path]
    diff = fm.diff_of(before, change)
    assert diff[0]["before"].endswith("mode 0644\n") and diff[0]["after"].endswith("mode 0640\n")
    fm.set_attributes(plan.managed_path, plan.attributes)
    assert stat.S_IMODE(os.stat(plan.managed_path).st_mode) == 0o640


def test_a_diff_of_a_file_that_is_not_utf8_is_readable_and_the_bytes_are_kept(tmp_path):
    files = Files(tmp_path, managed=rendered("2001"), site=b"; caf\xe9\n" + SITE)
    plan = files.plan("2001")
    before = {path: fm.read_file(path) for path in (plan.managed_path, plan.main_path)}
    change = fm.compare(plan, before)
    assert change.contents[plan.main_path] == b"; caf\xe9\n" + SITE + LINE + b"\n"
    (diff,) = fm.diff_of(before, change)
    json.dumps(diff)  # what Ansible does with it
    assert diff["after"].startswith("; caf\ufffd\n")


def test_an_empty_set_does_not_replace_a_dialplan_with_extensions_unless_allowed(tmp_path):
    files = Files(tmp_path, managed=rendered("2001", "2002"))
    plan = files.plan()
    before = {path: fm.read_file(path) for path in (plan.managed_path, plan.main_path)}
    with pytest.raises(fm.Failure, match="^refusing to replace the follow-me dialplan of 2 extension.*followme_allow_"
                                         "empty: true; nothing was changed$"):
        fm.refuse_empty(plan, before, allow_empty=False, check_mode=False)
    with pytest.raises(fm.Failure, match="^would refuse to replace"):
        fm.refuse_empty(plan, before, allow_empty=False, check_mode=True)
    fm.refuse_empty(plan, before, allow_empty=True, check_mode=False)
    empty = Files(tmp_path, managed=rendered())
    fm.refuse_empty(plan, {path: fm.read_file(path) for path in (plan.managed_path, plan.main_path)}, False, False)
    assert empty.original


# -- lock --------------------------------------------------------------------------------------------

def test_two_runs_take_turns_on_the_lock(tmp_path):
    path = str(tmp_path / "followme.lock")
    inside, order = threading.Lock(), []

    waits = {}

    def one_run(name):
        with fm.host_lock(path, fm.Deadline(10), poll=0.01) as waited:
            assert inside.acquire(blocking=False), "two runs in the critical section at once"
            waits[name] = waited
            order.append(f"{name} in")
            time.sleep(0.2)
            order.append(f"{name} out")
            inside.release()

    threads = [threading.Thread(target=one_run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    first, second = order[0][0], order[2][0]
    assert waits[first] is None
    assert 0.1 < waits[second][0] < 1 and waits[second][1] == str(os.getpid())


def test_a_lock_held_past_the_time_limit_fails_naming_the_holder(tmp_path):
    path = str(tmp_path / "followme.lock")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys, time
fd = os.open({path!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, b"4242\\n", 0); print("held", flush=True); time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(fm.DeadlineExpired, match=f"another run of this module \\(pid 4242\\) held {path} for the "
                                                     "whole time limit \\(0.3 s\\); nothing was changed"):
            with fm.host_lock(path, fm.Deadline(0.3)):
                pass
        assert time.monotonic() - started < 2
    finally:
        holder.kill()
        holder.wait()
    with fm.host_lock(path, fm.Deadline(1)):
        assert open(path).read() == f"{os.getpid()}\n"


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path):
    target = tmp_path / "passwd"
    target.write_text("x")
    (tmp_path / "followme.lock").symlink_to(target)
    with pytest.raises(fm.Failure, match="cannot open the lock file .*: Too many levels of symbolic links"):
        with fm.host_lock(str(tmp_path / "followme.lock"), fm.Deadline(1)):
            pass
    assert target.read_text() == "x"


def test_check_mode_takes_a_shared_lock_and_creates_nothing(tmp_path):
    path = tmp_path / "followme.lock"
    with fm.host_lock(str(path), fm.Deadline(1), shared=True) as waited:
        assert waited is None
    assert not path.exists()
    with fm.host_lock(str(path), fm.Deadline(1)), open(path) as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)


# -- asterisk -rx with a time limit (a fake executable) -------------------------------------------------

def fake_asterisk(tmp_path, body: str) -> str:
    script = tmp_path / "asterisk"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_frozen_asterisk_is_killed_after_the_command_timeout(tmp_path):
    asterisk = fm.Asterisk(fake_asterisk(tmp_path, "exec sleep 30"), 0.5, fm.Deadline(60))
    started = time.monotonic()
    with pytest.raises(fm.AsteriskUnavailable) as raised:
        asterisk.rx("core waitfullybooted")
    assert time.monotonic() - started < 3
    assert raised.value.frozen
    assert str(raised.value) == ("asterisk -rx 'core waitfullybooted': no answer within 0.5 s (Asterisk frozen or "
                                 "overloaded)")
    pid = int((tmp_path / "pid").read_text())
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


def test_the_run_deadline_bounds_every_command(tmp_path):
    now = [0.0]
    asterisk = fm.Asterisk(fake_asterisk(tmp_path, "echo ok"), 30, fm.Deadline(5, clock=lambda: now[0]))
    assert asterisk.rx("core show uptime") == "ok\n"
    now[0] = 6
    with pytest.raises(fm.DeadlineExpired, match="passed before asterisk -rx 'core show uptime'"):
        asterisk.rx("core show uptime")
    assert asterisk.rx("core show uptime", bounded=False) == "ok\n"  # a rollback still gets its commands


def test_asterisk_not_running(tmp_path):
    script = fake_asterisk(tmp_path, 'echo "Unable to connect to remote asterisk (does /run/asterisk/asterisk.ctl '
                                     'exist?)"; exit 1')
    with pytest.raises(fm.AsteriskUnavailable, match="Unable to connect") as raised:
        fm.Asterisk(script, 5, fm.Deadline(60)).rx("core waitfullybooted")
    assert not raised.value.frozen


# -- the module as Ansible runs it (main) -------------------------------------------------------------

def run_module(tmp_path, monkeypatch, capsys, asterisk_body="echo", **arguments):
    monkeypatch.setattr(fm, "LOCK_DIRS", (str(tmp_path),))
    # A module runs in a process of its own: start from no warnings, as it does (module.warn keeps them
    # in a process-wide collection that earlier modules run in this test process filled).
    for name in ("_global_warnings", "_global_deprecations"):
        monkeypatch.setattr(common_warnings, name, type(getattr(common_warnings, name))())
    # What the module says through module.warn: in a test process that also loaded Ansible's controller
    # side, ansible-core 2.19 shows warnings at once instead of returning them in the result.
    warned = []
    warn = AnsibleModule.warn
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, message: warned.append(message) or warn(self, message))
    args = dict(declarations={"2001": dict(DECLARATION)}, config_dir=str(tmp_path / "etc"), group=str(NOGROUP),
                asterisk=fake_asterisk(tmp_path, asterisk_body), command_timeout=2, timeout=10)
    args.update(arguments)
    with patch_module_args(args), pytest.raises(SystemExit):
        fm.main()
    for number in fm.SIGNALS:
        signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
    return {**json.loads(capsys.readouterr().out), "_warned": warned}


def warnings(result) -> list:
    """The messages the module gave module.warn."""
    return result["_warned"]


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "extensions.conf").write_bytes(SITE)
    return tmp_path / "etc"


def test_main_unknown_group_writes_nothing(tmp_path, monkeypatch, capsys, etc):
    result = run_module(tmp_path, monkeypatch, capsys, group="no-such-group-here")
    assert result["failed"] and result["msg"] == ("unknown group 'no-such-group-here' on this host "
                                                  "(followme_file_group): nothing was written")
    assert sorted(p.name for p in etc.iterdir()) == ["extensions.conf"]


def test_main_result_has_a_count_not_the_plans_and_warns_through_module_warn(tmp_path, monkeypatch, capsys, etc):
    result = run_module(tmp_path, monkeypatch, capsys, asterisk_body="echo 'Unable to connect to remote asterisk'; "
                        "exit 1", _ansible_check_mode=True)
    assert result["changed"] and result["extension_count"] == 1 and "plans" not in result
    assert result["files"] == [str(etc / FILE_NAME), str(etc / "extensions.conf")]
    assert any(w.startswith("Asterisk is not running") for w in warnings(result))
    assert "deprecations" not in result
    assert sorted(p.name for p in etc.iterdir()) == ["extensions.conf"]


def test_main_asterisk_down_writes_nothing(tmp_path, monkeypatch, capsys, etc):
    result = run_module(tmp_path, monkeypatch, capsys, asterisk_body="echo 'Unable to connect to remote asterisk'; "
                        "exit 1")
    assert result["failed"] and result["msg"].startswith("Asterisk is not running (asterisk -rx 'core waitfully")
    assert result["msg"].endswith("nothing was written")
    assert sorted(p.name for p in etc.iterdir()) == ["extensions.conf"]


def test_main_frozen_asterisk_writes_nothing(tmp_path, monkeypatch, capsys, etc):
    started = time.monotonic()
    result = run_module(tmp_path, monkeypatch, capsys, asterisk_body="exec sleep 30", command_timeout=1)
    assert time.monotonic() - started < 5
    assert result["failed"] and result["msg"] == ("Asterisk does not answer (asterisk -rx 'core waitfullybooted': no "
                                                  "answer within 1 s (Asterisk frozen or overloaded)); nothing was "
                                                  "written")
    assert sorted(p.name for p in etc.iterdir()) == ["extensions.conf"]


def test_main_empty_set_refused_also_in_check_mode(tmp_path, monkeypatch, capsys, etc):
    (etc / FILE_NAME).write_text(rendered("2001", "2002"))
    (etc / "extensions.conf").write_bytes(SITE + LINE + b"\n")
    original = (etc / FILE_NAME).read_text()
    no_followme = "echo \"There is no existence of 's@followme-revision'\""
    for check in (True, False):
        result = run_module(tmp_path, monkeypatch, capsys, asterisk_body=no_followme, declarations={},
                            _ansible_check_mode=check)
        assert result["failed"], result
        assert result["msg"].startswith(("would refuse" if check else "refusing")
                                        + " to replace the follow-me dialplan of 2 extension(s)")
    assert (etc / FILE_NAME).read_text() == original


def test_main_removes_temporary_files_a_killed_run_left(tmp_path, monkeypatch, capsys, etc):
    (etc / ".followme-abc.tmp").write_text("half")
    result = run_module(tmp_path, monkeypatch, capsys, asterisk_body="exit 0", timeout=10)
    assert not (etc / ".followme-abc.tmp").exists()
    assert any(w.startswith(f"removed {etc}/.followme-abc.tmp") for w in warnings(result))


@pytest.mark.parametrize("bad", ["../extensions.conf", "extensions_followme.conf", "custom.conf\n#exec x",
                                 "extensions_custom"])
def test_a_bad_include_file_is_refused_by_the_module_too(tmp_path, bad):
    """Validation refuses it on the controller; a direct module call is refused before anything is read."""
    with pytest.raises(fm.Failure, match="include_file must be a file name in config_dir"):
        Files(tmp_path, None).plan("2001", include_file=bad)


# -- a rerun with nothing to do skips rendering -----------------------------------------------------

def _params(directory, declarations, toggle_code="*21"):
    return dict(declarations=declarations, context="followme", device="PJSIP/{extension}",
                outbound_context="from-internal", extension_context="from-internal", voicemail_context="default",
                confirm_prompt="followme/options", too_late_prompt="followme/sorry", confirm_timeout=5,
                toggle_code=toggle_code, config_dir=str(directory), include_file="extensions.conf", owner="root",
                group=str(NOGROUP), mode="0640")


@pytest.mark.parametrize("toggle_code", ["*21", ""])
def test_an_unchanged_stamped_file_is_taken_as_the_plan(tmp_path, monkeypatch, toggle_code):
    declarations = {e: dict(DECLARATION) for e in ("2001", "2002", "2003")}
    declarations["2003"]["enabled"] = False
    fresh = fm.make_plan(_params(tmp_path, declarations, toggle_code))
    (tmp_path / FILE_NAME).write_text(fresh.text)
    rendering = []
    monkeypatch.setattr(fm, "render", lambda *a, **k: rendering.append(a) or render(*a, **k))
    again = fm.make_plan(_params(tmp_path, declarations, toggle_code))
    assert rendering == []  # taken from the file
    assert (again.text, again.enabled, again.extension_count) == (fresh.text, fresh.enabled, fresh.extension_count)
    assert again.enabled == ({"2001": True, "2002": True, "2003": False} if toggle_code else
                             {"2001": True, "2002": True})


@pytest.mark.parametrize("edit", [
    lambda text: text.replace("exten => 2002,1,", "exten => 2009,1,"),  # a hand edit of the body
    lambda text: text[:-1],  # truncated
    lambda text: text.replace("[followme-revision]", "[followme-revision]\nexten => 1,1,Dial(PJSIP/x)"),
    lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("; Input ")) + "\n",
])
def test_a_changed_file_is_rendered_again(tmp_path, monkeypatch, edit):
    declarations = {e: dict(DECLARATION) for e in ("2001", "2002")}
    fresh = fm.make_plan(_params(tmp_path, declarations))
    (tmp_path / FILE_NAME).write_text(edit(fresh.text))
    rendering = []
    monkeypatch.setattr(fm, "render", lambda *a, **k: rendering.append(a) or render(*a, **k))
    assert fm.make_plan(_params(tmp_path, declarations)).text == fresh.text
    assert len(rendering) == 1


def test_the_stamp_covers_the_inputs_and_the_renderer_code(monkeypatch):
    declarations = {"2001": dict(DECLARATION)}
    stamp = input_stamp(declarations, SETTINGS, True)
    assert len(stamp) == 64 and stamp == input_stamp({"2001": dict(DECLARATION)}, SETTINGS, True)
    assert input_stamp({"2001": {**DECLARATION, "ring_time": 21}}, SETTINGS, True) != stamp
    assert input_stamp(declarations, dataclasses.replace(SETTINGS, device="SIP/{extension}"), True) != stamp
    assert input_stamp(declarations, SETTINGS, False) != stamp
    real = digest_module.inspect.getsource
    monkeypatch.setattr(digest_module.inspect, "getsource", lambda module: real(module) + "# changed\n")
    assert input_stamp(declarations, SETTINGS, True) != stamp
    monkeypatch.setattr(digest_module.inspect, "getsource", lambda module: (_ for _ in ()).throw(OSError("zip")))
    assert input_stamp(declarations, SETTINGS, True) == ""  # no stamp: every run renders
    assert "; Input" not in render(build_plans(declarations), SETTINGS, "")
    with pytest.raises(ValueError, match="input stamp"):
        render(build_plans(declarations), SETTINGS, "x\n[evil]")


def test_hints_made_from_the_lamp_pattern_are_not_drift():
    shown = ("[ Context 'followme-toggle' created by 'pbx_config' ]\n"
             "  '*21' =>          1. Set(fm_base=x)                          [extensions_followme.conf:30]\n"
             "                    2. Hangup()                                 [extensions_followme.conf:31]\n"
             "  '*212001' =>      hint: Custom:FOLLOWME2001                   [pbx_config]\n"
             "  '*21100007' =>    hint: Custom:FOLLOWME100007                 [pbx_config]\n"
             "  '_[*]21X.' =>     hint: Custom:FOLLOWME${EXTEN:3}             [extensions_followme.conf:32]\n"
             "\n-= 4 extensions (5 priorities) in 1 context. =-\n")
    state = fm.parse_context(shown)
    assert (state.extensions, state.priorities, state.sources) == (2, 3, frozenset({FILE_NAME}))
    assert state.problem("followme-toggle", (2, 3)) is None
    # a hint for another device, or any other line added at the CLI, is still a line from elsewhere
    other = shown.replace("Custom:FOLLOWME2001 ", "Custom:OTHER2001   ")
    assert "also holds lines from pbx_config" in fm.parse_context(other).problem("followme-toggle", (3, 4))
