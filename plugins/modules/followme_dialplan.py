#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: install a host's follow-me dialplan, reload Asterisk only on change, prove it, roll back."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_dialplan
short_description: Install the Follow Me dialplan of an Asterisk PBX and reload it safely
version_added: "1.0.0"
description:
  - Renders every follow-me declaration of the host into one managed file, C(extensions_followme.conf),
    in O(config_dir), and makes sure C(extensions.conf) includes it with one managed C(#tryinclude) line.
    Every other byte of the site's configuration is left as it was.
  - Files are written atomically, with explicit owner, group and mode, and carry a managed-file header.
  - Asterisk is reloaded only when a managed file changed (or the running dialplan is not the one on disk),
    with C(module reload pbx_config.so) (the dialplan only), never a restart.
  - Success is proven from Asterisk's own state afterwards, since C(asterisk -rx) exits 0 even when a
    command failed. The running dialplan must carry the new revision and every managed context must hold
    exactly the extensions and priorities that were written. Otherwise the previous files (content, owner
    and mode) are restored and reloaded, and the task fails with what Asterisk showed.
  - A file the running Asterisk could not read (owner, group and mode against its user and groups) is
    refused before anything is written.
  - When Asterisk is not running the task fails before writing anything.
  - Takes all of a host's declarations in one call; the dialplan per extension is two priorities, the
    logic lives in shared subroutines.
author:
  - followme developers
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
  owner:
    description: Owner of the managed file.
    type: str
    default: root
  group:
    description: Group of the managed file (Asterisk must be able to read it).
    type: str
    default: asterisk
  mode:
    description: Mode of the managed file.
    type: raw
    default: "0640"
  asterisk:
    description: The asterisk binary used for C(asterisk -rx).
    type: path
    default: asterisk
attributes:
  check_mode:
    support: full
    description: Computes the change and the diff; writes nothing and reloads nothing.
  diff_mode:
    support: full
    description: Shows the change of each managed file.
  platform:
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
  description: Managed files that were (or in check mode would be) written.
  returned: always
  type: list
  elements: str
  sample: [/etc/asterisk/extensions_followme.conf]
reloaded:
  description: Whether Asterisk's dialplan was reloaded.
  returned: always
  type: bool
extensions:
  description: Extensions that have a follow-me in the dialplan (the enabled declarations).
  returned: always
  type: list
  elements: str
  sample: ["2001", "2002"]
plans:
  description: The call plan of each extension in words.
  returned: always
  type: dict
  sample: {"2001": "2001: ring 2001 for 27 s, joined after 7 s by 2002, 909121234567# for 20 s; then voicemail 2001"}
"""

import grp
import os
import pwd
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible_collections.followme.asterisk.plugins.module_utils.dialplan import (
    FILE_NAME,
    Settings,
    context_of,
    counts,
    render,
    revision_of,
)
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plans

# pbx_config only: the narrowest reload that loads the dialplan. Unlike `dialplan reload` it goes
# through Asterisk's module loader, so `core show uptime` shows when it last happened.
RELOAD = "module reload pbx_config.so"
# #tryinclude: should the managed file ever be missing, Asterisk still boots (with #include, pbx_config
# refuses to load and Asterisk exits at start-up).
INCLUDE_LINE = f'#tryinclude "{FILE_NAME}"'
_INCLUDED = re.compile(r'^[ \t]*#(?:try)?include[ \t]+"?' + re.escape(FILE_NAME) + r'"?[ \t]*$', re.M)
_LIVE_REVISION = re.compile(r"NoOp\(([0-9a-f]{16})\)")
_SUMMARY = re.compile(r"-= (\d+) extensions? \((\d+) priorit(?:y|ies)\) in \d+ contexts?\. =-")


class Asterisk:
    """The running Asterisk, through asterisk -rx."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.binary = module.params["asterisk"]

    def rx(self, command: str) -> str:
        rc, out, err = self.module.run_command([self.binary, "-rx", command])
        text = to_text(out) + to_text(err)
        if rc != 0 or "Unable to connect to remote asterisk" in text:
            raise AsteriskDown(text.strip() or f"asterisk -rx exited {rc}")
        return text

    def wait_fully_booted(self) -> None:
        self.rx("core waitfullybooted")

    def revision(self, context: str):
        """The revision of the follow-me dialplan Asterisk runs, or None."""
        match = _LIVE_REVISION.search(self.rx(f"dialplan show s@{context}-revision"))
        return match.group(1) if match else None

    def cannot_read(self, owner: str, group: str, mode) -> str | None:
        """Why the running Asterisk could not read a file of this owner, group and mode, or None."""
        ids = running_ids()
        if ids is None or ids[0] == 0:
            return None
        uid, gid, groups = ids
        wanted = numeric_ids(owner, group)
        if wanted is None:
            return None  # set_owner/group_if_different reports the unknown name
        file_uid, file_gid = wanted
        bits = mode_bits(mode)
        if (file_uid == uid and bits & 0o400) or ((file_gid == gid or file_gid in groups) and bits & 0o040) \
                or bits & 0o004:
            return None
        return (f"unreadable by Asterisk, which runs as {_name(pwd.getpwuid, uid)}:{_name(grp.getgrgid, gid)}, "
                f"with owner {owner}, group {group}, mode {bits:04o}")

    def context_counts(self, context: str):
        text = self.rx(f"dialplan show {context}")
        match = _SUMMARY.search(text)
        return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


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


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


class AsteriskDown(Exception):
    pass


_SWITCH = re.compile(r"^/FOLLOWME/([0-9]{1,15})\s*:\s*(on|off)\s*$", re.M)


def user_switches(module: AnsibleModule, asterisk: Asterisk, plans, result: dict) -> None:
    """result["switched"]: {extension: on|off} where a user's switch (AstDB FOLLOWME) differs from the
    declaration; with toggle_reset, those switches are removed and the lamps set to the declared state."""
    switched = {extension: state for extension, state in _SWITCH.findall(asterisk.rx("database show FOLLOWME"))
                if extension in plans and state != ("on" if plans[extension].enabled else "off")}
    result["switched"] = switched
    if module.check_mode and switched:
        result.setdefault("warnings", []).extend(
            f"extension {extension}: its user switched follow-me {state} (declared "
            f"{'on' if state == 'off' else 'off'})" + ("; toggle_reset would put it back" if module.params[
                "toggle_reset"] else "") for extension, state in sorted(switched.items()))
    if not (module.params["toggle_reset"] and switched):
        return
    result["changed"] = True
    result["reset"] = sorted(switched)
    if module.check_mode:
        return
    for extension in sorted(switched):
        asterisk.rx(f"database del FOLLOWME {extension}")
        lamp = "INUSE" if plans[extension].enabled else "NOT_INUSE"
        asterisk.rx(f"devstate change Custom:FOLLOWME{extension} {lamp}")


def with_include(text: str) -> str:
    """The site's extensions.conf with the one managed include line; every other byte as it was."""
    if _INCLUDED.search(text):
        return _INCLUDED.sub(INCLUDE_LINE, text, count=1)
    return text + ("" if text.endswith("\n") or not text else "\n") + INCLUDE_LINE + "\n"


def read(path: str):
    try:
        with open(path, "rb") as handle:
            return to_text(handle.read(), errors="surrogate_or_strict")
    except FileNotFoundError:
        return None


def write_atomically(module: AnsibleModule, path: str, text: str, attributes: dict | None) -> None:
    """Write text to path through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".followme-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(to_bytes(text))
            stream.flush()
            os.fsync(stream.fileno())
        if os.path.exists(path):
            st = os.stat(path)
            os.chown(temporary, st.st_uid, st.st_gid)
            os.chmod(temporary, st.st_mode & 0o7777)
        module.atomic_move(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    if attributes:
        set_attributes(module, path, attributes)


def numeric_ids(owner: str, group: str):
    """(uid, gid) of an owner and a group given by name or number, or None when one is unknown."""
    try:
        uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    return uid, gid


def mode_bits(mode) -> int:
    return int(mode, 8) if isinstance(mode, str) else int(mode)


def attributes_differ(path: str, owner: str, group: str, mode) -> bool:
    """Whether the file's owner, group or mode is not the wanted one."""
    st = os.stat(path)
    wanted = numeric_ids(owner, group)
    # An unknown name: let set_owner/group_if_different report it.
    return wanted is None or (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (*wanted, mode_bits(mode))


def set_attributes(module: AnsibleModule, path: str, attributes: dict) -> bool:
    changed = module.set_owner_if_different(path, attributes["owner"], False)
    changed = module.set_group_if_different(path, attributes["group"], changed)
    return module.set_mode_if_different(path, attributes["mode"], changed)


def main():
    module = AnsibleModule(
        argument_spec=dict(
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
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="asterisk"),
            mode=dict(type="raw", default="0640"),
            asterisk=dict(type="path", default="asterisk"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    settings = Settings(
        context=p["context"], device=p["device"], outbound_context=p["outbound_context"],
        extension_context=p["extension_context"], voicemail_context=p["voicemail_context"],
        confirm_prompt=p["confirm_prompt"], too_late_prompt=p["too_late_prompt"],
        confirm_timeout=p["confirm_timeout"], toggle_code=p["toggle_code"],
    )
    try:
        plans = build_plans(p["declarations"], with_disabled=bool(p["toggle_code"]))
        managed_text = render(plans, settings)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        module.fail_json(msg=f"cannot render the declarations ({type(exc).__name__}: {exc}); "
                             "they must pass followme_validate first; nothing was written")
    revision = revision_of(managed_text)
    managed_path = os.path.join(p["config_dir"], FILE_NAME)
    main_path = os.path.join(p["config_dir"], "extensions.conf")

    before = {managed_path: read(managed_path), main_path: read(main_path)}
    if before[main_path] is None:
        module.fail_json(msg=f"{main_path} does not exist: the site's dialplan must be there for follow-me "
                             "to hook into; nothing was written")
    after = {managed_path: managed_text, main_path: with_include(before[main_path])}
    changed_paths = [path for path in (managed_path, main_path) if before[path] != after[path]]
    if before[managed_path] is not None and managed_path not in changed_paths and attributes_differ(
            managed_path, p["owner"], p["group"], p["mode"]):
        changed_paths.insert(0, managed_path)

    result = dict(changed=False, revision=revision, previous_revision=None, files=changed_paths, reloaded=False,
                  extensions=list(plans), plans={e: plan.describe() for e, plan in plans.items()})
    if module._diff:
        result["diff"] = [dict(before=before[path] or "", after=after[path], before_header=path, after_header=path)
                          for path in changed_paths]

    asterisk = Asterisk(module)
    try:
        live = asterisk.revision(settings.context)
    except AsteriskDown as exc:
        if module.check_mode:
            result.update(changed=bool(changed_paths), warnings=[f"Asterisk is not running: {exc}"])
            module.exit_json(**result)
        module.fail_json(msg=f"Asterisk is not running (asterisk -rx: {exc}); nothing was written", **result)
    result["previous_revision"] = live
    user_switches(module, asterisk, plans, result)
    if not changed_paths and live == revision:
        module.exit_json(**result)
    result["changed"] = True
    if module.check_mode:
        module.exit_json(**result)

    attributes = dict(owner=p["owner"], group=p["group"], mode=p["mode"])
    unreadable = asterisk.cannot_read(p["owner"], p["group"], p["mode"])
    if unreadable:
        module.fail_json(msg=f"{managed_path} would be {unreadable}; nothing was written", **result)
    stats = {path: os.stat(path) for path in (managed_path, main_path) if before[path] is not None}
    try:
        for path in changed_paths:
            write_atomically(module, path, after[path], attributes if path == managed_path else None)
        result["reloaded"] = True
        problem = reload_and_prove(asterisk, settings.context, managed_text, revision)
    except Exception as exc:  # a failed write or a dead Asterisk: never leave a half-applied state
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        module.exit_json(**result)

    # Roll back: the previous files (content, owner and mode), reloaded, so the PBX keeps the dialplan it ran before.
    rollback = []
    for path in changed_paths:
        try:
            if before[path] is None:
                if os.path.exists(path):
                    os.unlink(path)
            else:
                write_atomically(module, path, before[path], None)
                os.chown(path, stats[path].st_uid, stats[path].st_gid)
                os.chmod(path, stats[path].st_mode & 0o7777)
        except Exception as exc:
            rollback.append(f"could not restore {path}: {exc}")
    if not rollback:
        old_text = before[managed_path] or ""
        try:
            if revision_of(old_text):
                again = reload_and_prove(asterisk, context_of(old_text), old_text, revision_of(old_text))
                if again:
                    rollback.append(f"the restored dialplan did not load either: {again}")
            else:
                asterisk.rx(RELOAD)  # there was no follow-me dialplan: nothing to prove
        except AsteriskDown as exc:
            rollback.append(f"Asterisk did not answer the rollback reload: {exc}")
    module.fail_json(
        msg=f"the new follow-me dialplan did not load ({problem}); "
            + ("the previous files were restored and reloaded"
               if not rollback else "ROLLBACK INCOMPLETE: " + "; ".join(rollback))
            + ". See Asterisk's log (dialplan reload messages) for the line it refused.",
        **result,
    )


def reload_and_prove(asterisk: Asterisk, context: str, text: str, revision: str):
    """Reload the dialplan and compare what Asterisk runs with text. None when it matches, else why not."""
    asterisk.wait_fully_booted()
    asterisk.rx(RELOAD)
    live = asterisk.revision(context)
    if live != revision:
        return f"Asterisk runs revision {live or 'none'} instead of {revision}"
    for name, expected in counts(text).items():
        seen = asterisk.context_counts(name)
        if seen != expected:
            return (f"context {name} holds {seen[0]} extensions and {seen[1]} priorities "
                    f"instead of {expected[0]} and {expected[1]}")
    return None


if __name__ == "__main__":
    main()
