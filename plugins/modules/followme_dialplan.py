#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: install a host's follow-me dialplan, reload Asterisk only on change, prove it, roll back.

One run is one transaction, each step a small function: plan (render, resolve owner/group/mode, read the
files safely, compare), lock (one run at a time per host), write (temporary files with their final owner,
group and mode, then renames), reload, prove (from Asterisk's own state), roll back (restore what this run
replaced, reload and prove the previous dialplan).
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_dialplan
short_description: Install the Follow Me dialplan of an Asterisk PBX and reload it safely
version_added: "1.0.0"
description:
  - Renders every follow-me declaration of the host into one managed file, C(extensions_followme.conf),
    in O(config_dir), and makes sure O(include_file) (default C(extensions.conf)) includes it with one managed
    C(#tryinclude) line.
    Every other byte of the site's configuration is left as it was (a duplicate include line of the managed
    file, however its path is spelt, is collapsed into the one managed line).
  - Both files are read without following symbolic links and must be regular files of at most 64 MiB; a
    symbolic link, FIFO, device or directory in their place is refused before anything is read.
  - Files are written atomically (a temporary file in the same directory, carrying its final owner, group
    and mode, then a rename), and the managed file carries a managed-file header. An unknown owner or group
    fails before anything is written.
  - One run at a time per host, with a lock file in C(/run/lock). Reading, writing, reloading, proving and rolling
    back are one critical section. Every C(asterisk -rx) has a time limit (O(command_timeout)) and the whole
    run a deadline (O(timeout)) checked before each step, so a frozen Asterisk fails the host and a run left
    behind never applies anything later.
  - Asterisk is reloaded only when a managed file changed or the running dialplan is not the one on disk
    (drift, e.g. an extension removed at the CLI), with C(module reload pbx_config.so) (the dialplan only),
    never a restart. An owner, group or mode that drifted is put back without a reload.
  - Success is proven from Asterisk's own state afterwards, since C(asterisk -rx) exits 0 even when a
    command failed. The running dialplan must carry the new revision and every managed context must hold
    exactly the extensions and priorities that were written, all from the managed file. Otherwise the files
    this run replaced (content, owner and mode) are restored, unless someone else changed them meanwhile,
    reloaded and proven, and the task fails saying what happened.
  - A file the running Asterisk could not read (owner, group and mode against its user and groups) is
    refused before anything is written.
  - Replacing a non-empty follow-me dialplan with an empty one fails unless O(allow_empty) is set.
  - When Asterisk is not running the task fails before writing anything.
  - Takes all of a host's declarations in one call; the dialplan per extension is two priorities, the
    logic lives in shared subroutines.
# No forge account yet: "!UNKNOWN" is ansible-test's mark for an author without a GitHub handle.
author:
  - followme developers (!UNKNOWN)
options:
  declarations:
    description:
      - The host's follow-me declarations keyed by extension (the C(followme) variable), validated beforehand
        by the role's C(followme_validate) action (see schemas/followme.schema.json).
      - On the controller, O(defaults) and then the schema's defaults are merged under each declaration.
      - Declarations with C(enabled=false) are left out of the dialplan, so the site's normal handling applies.
    type: dict
    required: true
  defaults:
    description: Fields merged under every declaration (the C(followme_defaults) variable).
    type: dict
    default: {}
  context:
    description: Context calls enter follow-me at (C(<extension>@<context>)); the shared subroutines are named after it.
    type: str
    default: followme
  device:
    description: How an internal extension's device is dialed; C({extension}) is replaced by the extension.
    type: str
    default: "PJSIP/{extension}"
  outbound_context:
    description: Context external entries are dialed in, as C(Local/<digits>@<outbound_context>).
    type: str
    default: from-internal
  extension_context:
    description: Context where C(no_answer.extension) sends a call (the extension's normal handling).
    type: str
    default: from-internal
  voicemail_context:
    description: Voicemail context of C(no_answer.voicemail) mailboxes.
    type: str
    default: default
  confirm_prompt:
    description: Sound file an external leg hears when O(declarations) ask to confirm calls (press 1 to accept).
    type: str
    default: followme/options
  too_late_prompt:
    description: Sound file an external leg hears when it accepts after the call was taken.
    type: str
    default: followme/sorry
  confirm_timeout:
    description: Seconds an external leg has to press a key before the leg is declined.
    type: int
    default: 5
  toggle_reset:
    description:
      - Put every user's switch (O(toggle_code)) back to the declared state (AstDB family C(FOLLOWME) and the
        lamps C(Custom:FOLLOWME<extension>)). Without it a deploy never touches them; either way the result's
        C(switched) lists the extensions whose user switch differs from the declaration (a warning in check mode).
    type: bool
    default: false
  toggle_code:
    description:
      - Feature code (e.g. C(*21)) users dial from their own device to switch their follow-me on or off
        (context C(<context>-toggle), to be included where the phones dial from). Empty, no switch, and
        disabled declarations are left out of the dialplan.
    type: str
    default: "*21"
  config_dir:
    description: Asterisk configuration directory (C(astetcdir)).
    type: path
    default: /etc/asterisk
  include_file:
    description:
      - File of O(config_dir) that carries the one managed C(#tryinclude "extensions_followme.conf") line, for
        example C(extensions_custom.conf) on FreePBX, which rewrites C(extensions.conf) on every change.
      - A plain file name matching C(^[A-Za-z0-9_.-]+\.conf$), other than C(extensions_followme.conf). The file
        must exist and be read by Asterisk's dialplan (C(extensions.conf) or a file it includes); otherwise the
        reload cannot be proven and the previous files are restored.
    type: str
    default: extensions.conf
  owner:
    description: Owner of the managed file (a name or a number).
    type: str
    default: root
  group:
    description: Group of the managed file (a name or a number; Asterisk must be able to read the file).
    type: str
    default: asterisk
  mode:
    description:
      - Mode of the managed file, octal (C("0640")). Group or other write bits, set-id and sticky bits and
        symbolic modes are refused.
    type: raw
    default: "0640"
  allow_empty:
    description:
      - Allow replacing a follow-me dialplan that has extensions with one that has none (the host has no
        declarations). Without it such a run fails, in check mode too, since an empty set is more often a
        misspelt variable or an inventory that did not load than a wish.
    type: bool
    default: false
  asterisk:
    description: The asterisk binary used for C(asterisk -rx).
    type: path
    default: asterisk
  command_timeout:
    description: Seconds each C(asterisk -rx) may take; a command that takes longer is killed and the host fails.
    type: int
    default: 30
  timeout:
    description:
      - Seconds the whole run may take, waiting for another run's lock included. It is checked before each
        step; past it the run stops (rolling back what it changed) rather than applying anything late.
    type: int
    default: 120
attributes:
  check_mode:
    support: full
    description: Computes the change and the diff; writes nothing and reloads nothing.
  diff_mode:
    support: full
    description: Shows the change of each managed file.
  platform:
    description: Runs on the PBX, a POSIX host with Asterisk and Python 3.
    support: full
    platforms: posix
notes:
  - Reloads are C(module reload pbx_config.so); calls in progress keep their dialplan and complete.
  - The site dialplan sends calls to follow-me, for example
    C(exten => _2XXX,1,GotoIf(${DIALPLAN_EXISTS(followme,${EXTEN},1)}?followme,${EXTEN},1)).
"""

EXAMPLES = r"""
- name: Install the follow-me dialplan of this PBX
  followme_dialplan:
    declarations:
      "2001":
        list: ["2001", "2002", "909121234567#"]
        initial_ring_time: 7
        strategy: ringallv2-prim
        ring_time: 20
        no_answer: {voicemail: "2001"}
        enabled: true
        confirm_calls: false
        cid_name_prefix: "FM "
        alert_info: null
        music_on_hold: null
        announcement: null
    device: "PJSIP/{extension}"
    outbound_context: from-internal

- name: What would change, without touching the PBX
  followme_dialplan:
    declarations: "{{ followme }}"
    defaults: "{{ followme_defaults }}"
  check_mode: true
  diff: true

- name: Remove follow-me from this PBX on purpose
  followme_dialplan:
    declarations: {}
    allow_empty: true
"""

RETURN = r"""
revision:
  description: Revision of the rendered dialplan (a hash of its content), as the running Asterisk shows it.
  returned: always
  type: str
  sample: 3f2a9c0d41be7e21
previous_revision:
  description: Revision Asterisk was running before, or null when it ran no follow-me dialplan.
  returned: always
  type: str
  sample: 0b1d2c3e4f5a6b7c
files:
  description: Managed files that were (or in check mode would be) written or given their owner, group and mode.
  returned: always
  type: list
  elements: str
  sample: [/etc/asterisk/extensions_followme.conf]
reloaded:
  description: Whether Asterisk's dialplan was reloaded.
  returned: always
  type: bool
extension_count:
  description: Number of extensions that have a follow-me in the dialplan (the enabled declarations).
  returned: always
  type: int
  sample: 12
"""

import concurrent.futures
import contextlib
import errno
import fcntl
import grp
import os
import pwd
import re
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Mapping

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.followme.asterisk.plugins.module_utils.dialplan import (
    FILE_NAME,
    Settings,
    context_of,
    counts,
    input_stamp,
    render,
    reused,
    revision_of,
)
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plans, written

# pbx_config only: the narrowest reload that loads the dialplan. Unlike `dialplan reload` it goes
# through Asterisk's module loader, so `core show uptime` shows when it last happened.
RELOAD = "module reload pbx_config.so"
# #tryinclude: should the managed file ever be missing, Asterisk still boots (with #include, pbx_config
# refuses to load and Asterisk exits at start-up).
INCLUDE_LINE = f'#tryinclude "{FILE_NAME}"'.encode()
MAIN_FILE = "extensions.conf"
_INCLUDE_FILE = re.compile(r"[A-Za-z0-9_.-]+\.conf\Z")
MAX_SIZE = 64 * 1024 * 1024  # no dialplan file is larger; a bigger one is refused rather than read
TEMP_PREFIX = ".followme-"
LOCK_DIRS = ("/run/lock", "/var/lock")
LOCK_NAME = "followme.lock"
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_DIRECTIVE = re.compile(rb"[ \t]*#(?:try)?include[ \t]+(?P<argument>[^;]*?)[ \t]*(?:;.*)?\Z", re.S)
_LIVE_REVISION = re.compile(r"NoOp\(([0-9a-f]{16})\)")
_SUMMARY = re.compile(r"-= (\d+) extensions? \((\d+) priorit(?:y|ies)\) in \d+ contexts?\. =-")
_SOURCE = re.compile(r"\[([^\[\]\s:]+)(?::\d+)?\]$", re.M)  # [file:line] or [registrar] ending a line
# A hint Asterisk made from the lamp's pattern hint when a phone subscribed to *21<extension> (or a lamp was
# read): registered by pbx_config, it is not a line of anyone's file, and it goes at the next reload.
_MADE_HINT = re.compile(r"^  '(\*[0-9]{1,8})([0-9]{1,15})' =>[ \t]+hint: Custom:FOLLOWME\2[ \t]+\[pbx_config\]\n", re.M)


# -- failures: what the user reads ----------------------------------------------------------------

class Failure(Exception):
    """The run fails with this message, which says what state the host is in."""


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGHUP, SIGINT) stopped the run."""


class AsteriskUnavailable(Exception):
    """asterisk -rx did not get an answer: Asterisk is not running (down) or did not answer in time."""

    def __init__(self, command: str, reason: str, frozen: bool = False):
        super().__init__(f"asterisk -rx '{command}': {reason}")
        self.frozen = frozen


class DeadlineExpired(Failure):
    pass


# -- time --------------------------------------------------------------------------------------------

class Deadline:
    """The whole run's time limit, checked before each step."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.end = clock() + seconds

    def remaining(self) -> float:
        return self.end - self.clock()

    def check(self, step: str) -> None:
        if self.remaining() <= 0:
            raise DeadlineExpired(f"the run's time limit ({self.seconds:g} s) passed before {step}")


class Signals:
    """Turns SIGTERM, SIGHUP and SIGINT into Interrupted, except while a section must not be cut short
    (renames, rollback): there the signal waits until the section is over."""

    def __init__(self):
        self.deferring = 0
        self.pending = None

    def install(self):
        for number in SIGNALS:
            signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        name = signal.Signals(number).name
        if self.deferring:
            self.pending = self.pending or name
            return
        raise Interrupted(name)

    @contextlib.contextmanager
    def deferred(self):
        self.deferring += 1
        try:
            yield
        finally:
            self.deferring -= 1

    def deliver(self) -> None:
        if self.pending and not self.deferring:
            name, self.pending = self.pending, None
            raise Interrupted(name)


# -- Asterisk ----------------------------------------------------------------------------------------

@dataclass
class ContextState:
    """What `dialplan show <context>` says about one context."""

    exists: bool
    extensions: int = 0
    priorities: int = 0
    sources: frozenset = frozenset()  # the files (or registrars) its lines come from

    def problem(self, name: str, expected) -> str | None:
        """Why this context is not what the managed file holds, or None."""
        if not self.exists:
            return None if tuple(expected) == (0, 0) else f"context {name} is missing"
        foreign = sorted(self.sources - {FILE_NAME})
        if foreign:
            return (f"context {name} also holds lines from {', '.join(foreign)}: a context of that name is "
                    f"defined elsewhere too (a context collision, or lines added at the CLI), so Asterisk "
                    f"merged them")
        if (self.extensions, self.priorities) != tuple(expected):
            return (f"context {name} holds {self.extensions} extensions and {self.priorities} priorities "
                    f"instead of {expected[0]} and {expected[1]}")
        return None


def parse_context(text: str) -> ContextState:
    if "There is no existence of" in text:
        return ContextState(exists=False)
    summary = _SUMMARY.search(text)
    extensions, priorities = (int(summary.group(1)), int(summary.group(2))) if summary else (0, 0)
    text, made = _MADE_HINT.subn("", text)  # the lamps' hints made at run time are not counted
    sources = frozenset(_SOURCE.findall(text))
    return ContextState(True, extensions - made, priorities - made, sources)


class Asterisk:
    """The running Asterisk, through `asterisk -rx`, each command with a time limit."""

    def __init__(self, binary: str, command_timeout: float, deadline: Deadline):
        self.binary = binary
        self.command_timeout = command_timeout
        self.deadline = deadline

    def rx(self, command: str, bounded: bool = True) -> str:
        """Run one CLI command. bounded: also within the run's deadline (a rollback is not)."""
        limit = self.command_timeout
        if bounded:
            self.deadline.check(f"asterisk -rx '{command}'")
            limit = min(limit, self.deadline.remaining())
        # subprocess.run kills the command when its time is up (or anything else stops the run) and waits
        # for it, so no asterisk -rx is left running behind the module.
        try:
            done = subprocess.run([self.binary, "-rx", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, close_fds=True, timeout=limit, check=False)
        except OSError as exc:
            raise AsteriskUnavailable(command, f"cannot run {self.binary}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise AsteriskUnavailable(command, f"no answer within {limit:.3g} s (Asterisk frozen or overloaded)",
                                      frozen=True) from None
        text = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0 or "Unable to connect to remote asterisk" in text:
            raise AsteriskUnavailable(command, text.strip() or f"exited {done.returncode}")
        return text

    def wait_fully_booted(self, bounded: bool = True) -> None:
        self.rx("core waitfullybooted", bounded)

    def reload(self, bounded: bool = True) -> None:
        self.rx(RELOAD, bounded)

    def revision(self, context: str, bounded: bool = True):
        """The revision of the follow-me dialplan Asterisk runs, or None."""
        match = _LIVE_REVISION.search(self.rx(f"dialplan show s@{context}-revision", bounded))
        return match.group(1) if match else None

    def context_state(self, context: str, bounded: bool = True) -> ContextState:
        return parse_context(self.rx(f"dialplan show {context}", bounded))


def prove(asterisk: Asterisk, text: str, bounded: bool = True) -> str | None:
    """None when Asterisk runs exactly the rendered text (revision, then each context), else why not.
    The revision is one short command; the contexts are listed only when it matches."""
    revision, context = revision_of(text), context_of(text)
    live = asterisk.revision(context, bounded)
    if live != revision:
        return f"Asterisk runs revision {live or 'none'} of the follow-me dialplan instead of {revision}"
    expected = counts(text)
    # One `asterisk -rx` per context, run side by side: each is a process of its own connecting to Asterisk.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        states = dict(zip(expected, pool.map(lambda name: asterisk.context_state(name, bounded), expected)))  # noqa: B905
    for name, wanted in expected.items():
        problem = states[name].problem(name, wanted)
        if problem:
            return problem
    return None


def strays(asterisk: Asterisk, text: str, keep=()) -> list:
    """Contexts of a rendered text (but those in keep) that still hold lines of the managed file."""
    left = []
    for name in counts(text):
        if name not in keep and FILE_NAME in asterisk.context_state(name, bounded=False).sources:
            left.append(name)
    return left


def running_ids():
    """(uid, gid, supplementary gids) of the running Asterisk, from its pid file, or None."""
    for pid_file in ("/run/asterisk/asterisk.pid", "/var/run/asterisk/asterisk.pid"):
        try:
            with open(pid_file) as handle:
                pid = int(handle.read().strip())
            with open(f"/proc/{pid}/status") as handle:
                status = dict(line.split(":", 1) for line in handle if ":" in line)
        except (OSError, ValueError):
            continue
        return (int(status["Uid"].split()[1]), int(status["Gid"].split()[1]),
                {int(g) for g in status.get("Groups", "").split()})
    return None


def cannot_read(ids, attributes: Attributes) -> str | None:
    """Why Asterisk, running with ids (uid, gid, groups), could not read a file of these attributes, or None."""
    if ids is None or ids[0] == 0:
        return None
    uid, gid, groups = ids
    bits = attributes.mode
    as_owner = attributes.uid == uid and bits & 0o400
    as_group = (attributes.gid == gid or attributes.gid in groups) and bits & 0o040
    if as_owner or as_group or bits & 0o004:
        return None
    return (f"unreadable by Asterisk, which runs as {_name(pwd.getpwuid, uid)}:{_name(grp.getgrgid, gid)}, "
            f"with {attributes.describe().strip()}")


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


# -- files -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attributes:
    uid: int
    gid: int
    mode: int

    def describe(self) -> str:
        return (f"owner {_name(pwd.getpwuid, self.uid)}, group {_name(grp.getgrgid, self.gid)}, "
                f"mode {self.mode:04o}\n")


@dataclass(frozen=True)
class FileState:
    """A managed path as read: its bytes (None when it does not exist) and attributes."""

    path: str
    data: bytes | None
    attributes: Attributes | None = None


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def read_file(path: str, limit: int = MAX_SIZE) -> FileState:
    """Read a managed path without following a symbolic link, blocking on a FIFO or opening a device.
    Anything but a regular file of at most limit bytes is refused (Failure) before it is read."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return FileState(path, None)
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror}; nothing was written") from None
    if not stat.S_ISREG(before.st_mode):
        target = ""
        if stat.S_ISLNK(before.st_mode):
            with contextlib.suppress(OSError):
                target = f" to {os.readlink(path)}"
        raise Failure(f"{path} is {_kind(before.st_mode)}{target}, not a regular file: refusing to read or replace "
                      "it (put a regular file there or remove it); nothing was written")
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Failure(f"{path} became a symbolic link while it was read: refusing to follow it; "
                          "nothing was written") from None
        raise Failure(f"cannot read {path}: {exc.strerror}; nothing was written") from None
    try:
        st = os.fstat(handle)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise Failure(f"{path} was replaced while it was read ({_kind(st.st_mode)} now): refusing it; "
                          "nothing was written")
        if st.st_size > limit:
            raise Failure(f"{path} is {st.st_size} bytes, more than any dialplan file ({limit} bytes): "
                          "refusing to read it; nothing was written")
        chunks, size = [], 0
        while True:
            chunk = os.read(handle, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise Failure(f"{path} grew past {limit} bytes while it was read: refusing it; nothing was written")
            chunks.append(chunk)
    finally:
        os.close(handle)
    return FileState(path, b"".join(chunks), Attributes(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))


def _same_path(candidate: str, managed: str) -> bool:
    if os.path.normpath(candidate) == os.path.normpath(managed):
        return True
    return (os.path.basename(candidate) == os.path.basename(managed)
            and os.path.realpath(os.path.dirname(candidate)) == os.path.realpath(os.path.dirname(managed)))


def includes_managed(line: bytes, config_dir: str) -> bool:
    """Whether a line of extensions.conf is an #include or #tryinclude of the managed file, however spelt."""
    match = _DIRECTIVE.match(line)
    if not match:
        return False
    argument = match.group("argument").strip()
    if len(argument) > 1 and (argument[:1], argument[-1:]) in ((b'"', b'"'), (b"<", b">")):
        argument = argument[1:-1].strip()
    if not argument:
        return False
    path = os.fsdecode(argument)
    if not os.path.isabs(path):
        path = os.path.join(config_dir, path)
    return _same_path(path, os.path.join(config_dir, FILE_NAME))


def with_include(data: bytes, config_dir: str) -> bytes:
    """The site's extensions.conf with exactly one managed include line, every other byte as it was.
    The first line that includes the managed file becomes the managed line (keeping its line ending),
    any later one is dropped; with none, the line is appended in the file's own line-ending style."""
    lines, kept = [], False
    for line in data.splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        if includes_managed(body, config_dir):
            if not kept:
                lines.append(INCLUDE_LINE + (line[len(body):] or b"\n"))
                kept = True
            continue
        lines.append(line)
    if not kept:
        newline = b"\r\n" if b"\r\n" in data else b"\n"
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            lines.append(newline)
        lines.append(INCLUDE_LINE + newline)
    return b"".join(lines)


def resolve_attributes(owner, group, mode) -> Attributes:
    """Owner, group and mode of the managed file as numbers; Failure when one is unknown or unsafe."""
    try:
        uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(str(owner)).pw_uid
    except KeyError:
        raise Failure(f"unknown owner {owner!r} on this host (followme_file_owner): nothing was written") from None
    try:
        gid = int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise Failure(f"unknown group {group!r} on this host (followme_file_group): nothing was written") from None
    return Attributes(uid, gid, mode_bits(mode))


def mode_bits(mode) -> int:
    if isinstance(mode, int) and not isinstance(mode, bool):
        bits = mode
    elif isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3}", mode.strip()):
        bits = int(mode, 8)
    else:
        raise Failure(f"mode {mode!r} (followme_file_mode) is not an octal mode such as \"0640\" (symbolic modes "
                      "are not supported): nothing was written")
    if not 0 <= bits <= 0o777 or bits & 0o022:
        raise Failure(f"mode {mode!r} (followme_file_mode, octal {bits:04o}) would let others than the owner write "
                      "the dialplan or sets set-id/sticky bits (quote it: \"0640\"): nothing was written")
    return bits


def stage(path: str, data: bytes, attributes: Attributes, label=None) -> str:
    """A temporary file next to path holding data, with its final owner, group and mode, flushed to disk.
    Nothing is left behind when this fails."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=TEMP_PREFIX, suffix=".tmp")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view):]
        os.fchown(handle, attributes.uid, attributes.gid)
        os.fchmod(handle, attributes.mode)  # after fchown, which may clear mode bits
        os.fsync(handle)
        os.close(handle)
        handle = None
        if label:
            label(temporary, path)
    except BaseException:
        if handle is not None:
            os.close(handle)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


def commit(temporary: str, path: str) -> None:
    os.rename(temporary, path)
    with contextlib.suppress(OSError):
        directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def set_attributes(path: str, attributes: Attributes) -> None:
    """Owner, group and mode of an existing regular file, changed in place (no symbolic link followed)."""
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise Failure(f"{path} is not a regular file any more: nothing was changed")
        os.fchown(handle, attributes.uid, attributes.gid)
        os.fchmod(handle, attributes.mode)
    finally:
        os.close(handle)


def remove_stale_temporaries(directory: str) -> list:
    """Temporary files a killed run left in directory (under the lock no other run has any)."""
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.startswith(TEMP_PREFIX) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        os.unlink(path)
                        removed.append(path)
    return removed


# -- lock --------------------------------------------------------------------------------------------

def lock_path(config_dir: str) -> str:
    for directory in LOCK_DIRS:
        if os.path.isdir(directory):
            return os.path.join(directory, LOCK_NAME)
    return os.path.join(config_dir, "." + LOCK_NAME)


@contextlib.contextmanager
def host_lock(path: str, deadline: Deadline, shared: bool = False, poll: float = 0.05):
    """One run at a time on this host: an flock held from the first read to the last reload. Yields None when
    the lock was free, else (seconds waited, pid of the run that held it). shared (check mode): waits for a run
    in progress, and takes nothing when no run ever made the file."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT)
    try:
        handle = os.open(path, flags, 0o600)
    except FileNotFoundError:
        if shared:
            yield None
            return
        raise Failure(f"cannot create the lock file {path}: no such directory; nothing was changed") from None
    except OSError as exc:
        raise Failure(f"cannot open the lock file {path}: {exc.strerror}; nothing was changed") from None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise Failure(f"the lock file {path} is not a regular file: refusing it; nothing was changed")
        operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        started, waited = time.monotonic(), None
        while True:
            try:
                fcntl.flock(handle, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip() or "?"
                if deadline.remaining() <= 0:
                    raise DeadlineExpired(
                        f"another run of this module (pid {holder}) held {path} for the whole time limit "
                        f"({deadline.seconds:g} s); nothing was changed") from None
                waited = holder
                time.sleep(poll)
        if not shared:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield None if waited is None else (time.monotonic() - started, waited)
    finally:
        os.close(handle)  # releases the lock


# -- plan ----------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What the host should hold."""

    managed_path: str
    main_path: str
    text: str
    attributes: Attributes
    extension_count: int  # extensions whose follow-me is on by default (enabled declarations)
    enabled: Mapping[str, bool] = field(default_factory=dict)  # every extension in the file: on by default?

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def revision(self) -> str:
        return revision_of(self.text)

    @property
    def context(self) -> str:
        return context_of(self.text)


@dataclass
class Change:
    """How the host differs from the plan on disk: contents to write, attributes to set."""

    contents: dict = field(default_factory=dict)  # path -> bytes, in the order they are written
    attributes: dict = field(default_factory=dict)  # path -> Attributes of the content to write or to set

    @property
    def paths(self) -> list:
        return list(dict.fromkeys([*self.contents, *self.attributes]))


def make_plan(params: dict) -> Plan:
    settings = Settings(
        context=params["context"], device=params["device"], outbound_context=params["outbound_context"],
        extension_context=params["extension_context"], voicemail_context=params["voicemail_context"],
        confirm_prompt=params["confirm_prompt"], too_late_prompt=params["too_late_prompt"],
        confirm_timeout=params["confirm_timeout"], toggle_code=params["toggle_code"],
    )
    attributes = resolve_attributes(params["owner"], params["group"], params["mode"])
    config_dir, include_file = params["config_dir"], params["include_file"]
    if not _INCLUDE_FILE.match(include_file) or include_file == FILE_NAME:
        raise Failure(f"include_file must be a file name in config_dir matching ^[A-Za-z0-9_.-]+\\.conf$, "
                      f"other than {FILE_NAME}, not {include_file!r}; nothing was written")
    managed_path = os.path.join(config_dir, FILE_NAME)
    declarations, with_disabled = params["declarations"], bool(params["toggle_code"])
    try:
        settings.check()
        # The file on the host, rendered from the same inputs by the same code (the stamp in its header) and
        # not changed since, is what rendering again would make: a rerun with nothing to do skips rendering.
        stamp = input_stamp(declarations, settings, with_disabled)
        current = None
        with contextlib.suppress(Failure, UnicodeDecodeError):
            current = (read_file(managed_path).data or b"").decode("utf-8")
        enabled = written(declarations, with_disabled)
        if current and reused(current, settings.context, stamp):
            text = current
        else:
            text = render(build_plans(declarations, with_disabled=with_disabled), settings, stamp)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Failure(f"cannot render the declarations ({type(exc).__name__}: {exc}); "
                      "they must pass followme_validate first; nothing was written") from None
    return Plan(managed_path, os.path.join(config_dir, include_file), text, attributes,
                sum(1 for on in enabled.values() if on), enabled)


def compare(plan: Plan, before: dict) -> Change:
    """The change from the files as read (before: path -> FileState) to the plan."""
    managed, main = before[plan.managed_path], before[plan.main_path]
    if main.data is None:
        raise Failure(f"{plan.main_path} does not exist: the site's dialplan must be there for follow-me to hook "
                      "into; nothing was written")
    change = Change()
    if managed.data != plan.data:
        change.contents[plan.managed_path] = plan.data
        change.attributes[plan.managed_path] = plan.attributes
    elif managed.attributes != plan.attributes:
        change.attributes[plan.managed_path] = plan.attributes
    included = with_include(main.data, os.path.dirname(plan.main_path))
    if included != main.data:
        change.contents[plan.main_path] = included
        change.attributes[plan.main_path] = main.attributes  # the site's file keeps its owner and mode
    return change


def refuse_empty(plan: Plan, before: dict, allow_empty: bool, check_mode: bool) -> None:
    """Failure when an empty dialplan would replace one with extensions, unless allowed."""
    if plan.extension_count or allow_empty:
        return
    old = before[plan.managed_path].data
    text = old.decode("utf-8", "replace") if old else ""
    old_count = counts(text).get(context_of(text), (0, 0))[0] if revision_of(text) else 0
    if old_count:
        raise Failure(
            f"{'would refuse' if check_mode else 'refusing'} to replace the follow-me dialplan of {old_count} "
            f"extension(s) in {plan.managed_path} with an empty one: this host has no enabled declarations (a "
            "misspelt variable or an inventory that did not load?). To remove follow-me from it on purpose, set "
            "followme_allow_empty: true; nothing was changed")


def diff_of(before: dict, change: Change) -> list:
    diffs = []
    for path in change.paths:
        old = before[path]
        if path in change.contents:
            diffs.append(dict(before_header=path, after_header=path,
                              before=(old.data or b"").decode("utf-8", "replace"),
                              after=change.contents[path].decode("utf-8", "replace")))
        else:
            diffs.append(dict(before_header=f"{path} (owner, group, mode)", after_header=f"{path} (owner, group, mode)",
                              before=old.attributes.describe(), after=change.attributes[path].describe()))
    return diffs


# -- write, reload, prove, roll back -----------------------------------------------------------------

def _os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "")
    return f"{exc.strerror or exc}{f' ({name})' if name else ''}"


class Transaction:
    """Write the changed contents, reload, prove; on any failure (whatever raised it: a Failure, an
    OSError, Asterisk, a signal, or a SystemExit from a fail_json) roll back what this run changed."""

    def __init__(self, asterisk: Asterisk, plan: Plan, before: dict, change: Change, *, deadline: Deadline,
                 signals: Signals | None = None, label=None):
        self.asterisk = asterisk
        self.plan = plan
        self.before = before
        self.change = change
        self.deadline = deadline
        self.signals = signals or Signals()
        self.label = label
        self.written = {}  # path -> bytes this run put there and has not restored
        self.committed = []  # every path this run renamed into place
        self.reload_sent = False

    # Each step, on its own.
    def write(self) -> None:
        """Stage every file first (a full or read-only directory fails here, nothing changed), then rename."""
        staged = {}
        try:
            for path, data in self.change.contents.items():
                try:
                    staged[path] = stage(path, data, self.change.attributes[path], self.label)
                except OSError as exc:
                    raise Failure(f"could not write {path}: {_os_error(exc)}") from None
            self.deadline.check("renaming the new files into place")
            with self.signals.deferred():
                for path, temporary in list(staged.items()):
                    try:
                        commit(temporary, path)
                    except OSError as exc:
                        raise Failure(f"could not rename the new {path} into place: {_os_error(exc)}") from None
                    self.written[path] = self.change.contents[path]
                    self.committed.append(path)
                    del staged[path]
            self.signals.deliver()
        finally:
            for temporary in staged.values():
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    def reload(self) -> None:
        self.asterisk.wait_fully_booted()
        self.deadline.check("reloading the dialplan")
        self.reload_sent = True
        self.asterisk.reload()

    def prove(self) -> None:
        problem = prove(self.asterisk, self.plan.text)
        if problem:
            raise Failure(problem)

    def run(self) -> None:
        try:
            self.write()
            self.reload()
            self.prove()
        except BaseException as exc:  # SystemExit (a fail_json) and signals too: never half-applied
            with self.signals.deferred():
                notes = self.roll_back()
            raise Failure(self.describe(exc, notes)) from None

    # The way back.
    def restore_files(self) -> list:
        """Put back what this run replaced, unless someone else changed it since. Notes of what could not be."""
        notes = []
        for path in reversed(list(self.written)):
            old = self.before[path]
            try:
                current = read_file(path).data
            except Failure as exc:
                notes.append(f"{path} was not restored: {exc}")
                continue
            if current != self.written[path]:
                notes.append(f"{path} was changed by someone else during this run, so it was left as it is")
                continue
            try:
                if old.data is None:
                    os.unlink(path)
                else:
                    commit(stage(path, old.data, old.attributes, self.label), path)
            except OSError as exc:
                notes.append(f"{path} could not be restored: {_os_error(exc)}")
            else:
                del self.written[path]
        return notes

    def reload_previous(self) -> list:
        """Reload the restored files and prove Asterisk runs them (or, with no follow-me before, none of ours)."""
        old = self.before[self.plan.managed_path].data
        old_text = old.decode("utf-8", "replace") if old is not None else ""
        try:
            self.asterisk.wait_fully_booted(bounded=False)
            self.asterisk.reload(bounded=False)
            if revision_of(old_text):
                again = prove(self.asterisk, old_text, bounded=False)
                if again:
                    return [f"the restored dialplan did not load either: {again}"]
            elif self.asterisk.revision(self.plan.context, bounded=False) is not None:
                return ["Asterisk still runs a follow-me revision after the files were removed"]
            left = strays(self.asterisk, self.plan.text, keep=counts(old_text) if revision_of(old_text) else ())
            if left:
                return [f"contexts {', '.join(left)} are still live after the reload"]
        except AsteriskUnavailable as exc:
            how = "froze" if exc.frozen else "stopped answering"
            return [f"Asterisk {how} during the rollback ({exc}), so the restored dialplan is not proven to run: "
                    "the previous files are on disk and the next reload or start loads them"]
        return []

    def roll_back(self) -> list:
        try:
            notes = self.restore_files()
            if self.reload_sent and not notes and self.change.contents:
                notes += self.reload_previous()
        except BaseException as exc:  # the rollback ends with a message, whatever stops it
            return [f"the rollback itself failed ({type(exc).__name__}: {exc})"]
        return notes

    def describe(self, exc: BaseException, notes: list) -> str:
        if isinstance(exc, Interrupted):
            cause = f"the run was interrupted by {exc}"
        elif isinstance(exc, AsteriskUnavailable):
            cause = (f"Asterisk froze during the reload ({exc})" if exc.frozen
                     else f"Asterisk died or stopped during the reload ({exc})")
        elif isinstance(exc, DeadlineExpired):
            cause = str(exc)
        elif isinstance(exc, Failure) and not self.reload_sent:
            cause = str(exc)
        elif isinstance(exc, Failure) and not self.change.contents:
            cause = f"the running dialplan differed from the file and a reload did not repair it ({exc})"
        elif isinstance(exc, Failure):
            cause = f"the new follow-me dialplan did not load ({exc})"
        elif isinstance(exc, SystemExit):
            cause = "the module was made to exit during the change"
        else:
            cause = f"{type(exc).__name__}: {exc}"
        if not self.committed and not self.reload_sent and not notes:
            outcome = "nothing was changed"
        elif notes:
            outcome = "ROLLBACK INCOMPLETE: " + "; ".join(notes)
        elif self.reload_sent and not self.change.contents:
            outcome = "the files were not changed"
        elif self.reload_sent:
            previous = revision_of((self.before[self.plan.managed_path].data or b"").decode("utf-8", "replace"))
            again = f"revision {previous}" if previous else "no follow-me dialplan"
            outcome = f"the previous files were restored and reloaded, Asterisk runs {again} again (proven)"
        else:
            outcome = "the previous files were restored (Asterisk had not been reloaded)"
        if self.signals.pending:
            outcome += f"; {self.signals.pending} arrived during the rollback, which was finished first"
        return f"{cause}; {outcome}"


# -- the run ---------------------------------------------------------------------------------------

ARGUMENT_SPEC = dict(
    declarations=dict(type="dict", required=True),
    defaults=dict(type="dict", default={}),
    context=dict(type="str", default="followme"),
    device=dict(type="str", default="PJSIP/{extension}"),
    outbound_context=dict(type="str", default="from-internal"),
    extension_context=dict(type="str", default="from-internal"),
    voicemail_context=dict(type="str", default="default"),
    confirm_prompt=dict(type="str", default="followme/options"),
    too_late_prompt=dict(type="str", default="followme/sorry"),
    confirm_timeout=dict(type="int", default=5),
    toggle_code=dict(type="str", default="*21"),
    toggle_reset=dict(type="bool", default=False),
    config_dir=dict(type="path", default="/etc/asterisk"),
    include_file=dict(type="str", default=MAIN_FILE),
    owner=dict(type="str", default="root"),
    group=dict(type="str", default="asterisk"),
    mode=dict(type="raw", default="0640"),
    allow_empty=dict(type="bool", default=False),
    asterisk=dict(type="path", default="asterisk"),
    command_timeout=dict(type="int", default=30),
    timeout=dict(type="int", default=120),
)


def asterisk_binary(module: AnsibleModule) -> str:
    name = module.params["asterisk"]
    if os.sep in name:
        return name
    return module.get_bin_path(name, opt_dirs=["/usr/sbin", "/usr/local/sbin"]) or name


def selinux_label(module: AnsibleModule):
    """Give a staged file the SELinux context its destination has (or would get), where SELinux is on."""
    if not module.selinux_enabled():
        return None

    def label(temporary, path):
        context = module.selinux_context(path) if os.path.exists(path) else module.selinux_default_context(path)
        module.set_context_if_different(temporary, context, False)
    return label


def run(module: AnsibleModule, result: dict, signals: Signals) -> None:
    """The transaction: plan, lock, read and compare, then write, reload, prove (or roll back)."""
    p = module.params
    deadline = Deadline(p["timeout"])
    plan = make_plan(p)
    result.update(revision=plan.revision, extension_count=plan.extension_count)
    asterisk = Asterisk(asterisk_binary(module), p["command_timeout"], deadline)
    with host_lock(lock_path(p["config_dir"]), deadline, shared=module.check_mode) as waited:
        if waited:
            module.warn(f"waited {waited[0]:.1f} s for another run of this module on this host (pid {waited[1]}) "
                        "to finish; this run started from what that one left")
        try:
            before, change, drift = survey(module, plan, asterisk, result)
            if not result["changed"] or module.check_mode:
                return
            unreadable = cannot_read(running_ids(), plan.attributes)
            if unreadable:
                raise Failure(f"{plan.managed_path} would be {unreadable}; nothing was written")
            deadline.check("changing anything")
        except AsteriskUnavailable as exc:
            how = "does not answer" if exc.frozen else "is not running"
            raise Failure(f"Asterisk {how} ({exc}); nothing was written") from None
        except DeadlineExpired as exc:
            raise Failure(f"{exc}; nothing was changed") from None
        if plan.managed_path in change.attributes and plan.managed_path not in change.contents:
            try:
                set_attributes(plan.managed_path, plan.attributes)  # owner/mode drift: no reload needed
            except OSError as exc:
                raise Failure(f"could not set the owner, group and mode of {plan.managed_path}: {_os_error(exc)}; "
                              "nothing else was changed") from None
        if change.contents or drift:
            transaction = Transaction(asterisk, plan, before, change, deadline=deadline, signals=signals,
                                      label=selinux_label(module))
            try:
                transaction.run()
            finally:
                result["reloaded"] = transaction.reload_sent


def survey(module: AnsibleModule, plan: Plan, asterisk: Asterisk, result: dict):
    """Read the files and the running dialplan (under the lock) and decide: (before, change, drift)."""
    try:
        asterisk.wait_fully_booted()
    except AsteriskUnavailable as exc:
        if not module.check_mode:
            raise
        module.warn(f"Asterisk is not running ({exc}): the running dialplan was not compared")
        asterisk = None
    if not module.check_mode:
        for path in remove_stale_temporaries(os.path.dirname(plan.managed_path)):
            module.warn(f"removed {path}, left behind by a run that was killed")
    before = {path: read_file(path) for path in (plan.managed_path, plan.main_path)}
    change = compare(plan, before)
    refuse_empty(plan, before, module.params["allow_empty"], module.check_mode)
    drift = None
    if asterisk is not None:
        old = (before[plan.managed_path].data or b"").decode("utf-8", "replace")
        result["previous_revision"] = asterisk.revision(context_of(old) or plan.context)
        if not change.contents:
            # The files are right; is the running dialplan the one on disk? (revision, then each context)
            drift = prove(asterisk, plan.text)
    result["files"] = change.paths
    result["changed"] = bool(change.paths or drift)
    if asterisk is not None and module.params["toggle_code"]:
        user_switches(module, asterisk, plan.enabled, result)
    if module._diff and change.paths:
        result["diff"] = diff_of(before, change)
    if drift:
        module.warn(f"the running dialplan differs from {plan.managed_path} ({drift}): "
                    + ("it would be reloaded" if module.check_mode else "reloading it"))
    return before, change, drift


_SWITCH = re.compile(r"^/FOLLOWME/([0-9]{1,15})\s*:\s*(on|off)\s*$", re.M)


def user_switches(module: AnsibleModule, asterisk: Asterisk, enabled: Mapping[str, bool], result: dict) -> None:
    """result["switched"]: {extension: on|off} where a user's switch (AstDB FOLLOWME) differs from the
    declaration; with toggle_reset, those switches are removed and the lamps set to the declared state."""
    switched = {extension: state for extension, state in _SWITCH.findall(asterisk.rx("database show FOLLOWME"))
                if extension in enabled and state != ("on" if enabled[extension] else "off")}
    result["switched"] = switched
    if module.check_mode:
        for extension, state in sorted(switched.items()):
            module.warn(f"extension {extension}: its user switched follow-me {state} (declared "
                        f"{'on' if state == 'off' else 'off'})"
                        + ("; toggle_reset would put it back" if module.params["toggle_reset"] else ""))
    if not (module.params["toggle_reset"] and switched):
        return
    result["changed"] = True
    result["reset"] = sorted(switched)
    if module.check_mode:
        return
    for extension in sorted(switched):
        asterisk.rx(f"database del FOLLOWME {extension}")
        lamp = "INUSE" if enabled[extension] else "NOT_INUSE"
        asterisk.rx(f"devstate change Custom:FOLLOWME{extension} {lamp}")


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    signals = Signals().install()
    result = dict(changed=False, revision=None, previous_revision=None, files=[], reloaded=False,
                  extension_count=0)
    # The arguments echoed back, without the declarations: thousands of them would travel back whole.
    result["invocation"] = {"module_args": {name: value for name, value in module.params.items()
                                            if name != "declarations"}}
    try:
        run(module, result, signals)
    except Failure as exc:
        module.fail_json(msg=str(exc), **result)
    except Interrupted as exc:
        module.fail_json(msg=f"the run was interrupted by {exc} before it changed anything; nothing was changed",
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
