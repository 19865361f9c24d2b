# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""FreePBX Follow Me settings (Asterisk database keys) -> follow-me declarations, plus a report.

Pure Python, controller side. FreePBX's findmefollow module keeps each extension's Follow Me in
Asterisk's database, family AMPUSER, under ``<extension>/followme/<key>``; its dialplan reads those
keys at call time, so they are what a FreePBX PBX actually does. This module reads them as that
dialplan reads them, normalises the follow-me list as FreePBX does when it regenerates its
configuration, and turns each extension into a declaration of this project's format. Whatever has
no equivalent here is listed as a Note (extension, FreePBX key, value, what the import did):
nothing is dropped silently.

What the keys mean (read from FreePBX's findmefollow module, not copied):

- ``ddial``: ``DIRECT`` = Follow Me enabled (calls to the extension go to Follow Me); ``EXTENSION``
  = disabled (calls ring the extension only). FreePBX's dialplan sends calls to the plain extension
  when the key is missing, so a missing key is imported as disabled.
- ``grplist``: entries joined by ``-``; an entry ending in ``#`` is dialed through the outbound
  routes; an entry that is no extension of the PBX is external too (FreePBX appends the ``#``);
  ``<self>#`` is made internal; characters other than digits, ``*``, ``+`` are removed; blank and
  repeated entries are dropped.
- ``prering`` (Initial Ring Time, ``""``/``0`` skips it), ``grptime`` (Ring Time), ``strategy``.
- ``grppre`` (CID Name Prefix), ``dring`` (Alert Info), ``ringing`` (``Ring`` or a music-on-hold
  class), ``annmsg`` (Announcement, a sound file name), ``grpconf`` (``ENABLED``: Confirm Calls),
  ``remotealertmsg`` / ``toolatemsg`` (Remote / Too-Late Announce, sound files), ``changecid`` /
  ``fixedcid`` (outbound caller ID: default, did, forcedid, fixed, extern), ``postdest``
  (Destination if no answer: ``context,extension,priority``; empty = hang up).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..module_utils.dialplan import _GOTO_EXTEN, _NAME, _SOUND, FREE_TEXT

#: Declaration fields in the order they are written (the schema's order; a unit test checks it).
FIELDS = ("list", "initial_ring_time", "strategy", "ring_time", "no_answer", "enabled", "confirm_calls",
          "cid_name_prefix", "alert_info", "music_on_hold", "announcement", "confirm_prompt", "too_late_prompt",
          "external_cid_mode", "external_cid_number", "schedule")
#: FreePBX's changecid modes (findmefollow) -> external_cid_mode.
CID_MODES = {"default": "default", "fixed": "fixed", "extern": "outside_fixed", "did": "dialed",
             "forcedid": "force_dialed"}
_CID_NUMBER = re.compile(r"\+?[0-9]{1,20}")
STRATEGIES = ("ringall", "ringall-prim", "hunt", "hunt-prim", "memoryhunt", "memoryhunt-prim",
              "firstavailable", "firstnotonphone", "ringallv2", "ringallv2-prim")
#: FreePBX's defaults (findmefollow install.php: FOLLOWME_RG_STRATEGY, FOLLOWME_TIME).
FREEPBX_STRATEGY = "ringallv2-prim"
FREEPBX_RING_TIME = 20
#: The followme/ keys the import reads; any other key under followme/ is reported when it holds a value.
KEYS = ("ddial", "grplist", "prering", "strategy", "grptime", "postdest", "grpconf", "grppre", "dring",
        "ringing", "annmsg", "remotealertmsg", "toolatemsg", "changecid", "fixedcid")
MAX_ENTRIES = 20

# Strict patterns, the schema's (whole string). Everything that reaches a declaration matches one.
_EXTENSION = re.compile(r"[0-9]{1,15}")
_EXTERNAL = re.compile(r"\+?[0-9*]{1,30}#")
# The renderer's own patterns where the schema's and the renderer's are one (a unit test keeps them equal).
_CID_PREFIX = FREE_TEXT["cid_name_prefix"]
_ALERT_INFO = FREE_TEXT["alert_info"]
_MOH = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTEXT = _NAME
_GOTO_EXTENSION = _GOTO_EXTEN
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_NUMBER = re.compile(r"[0-9]{1,5}")
_VOICEMAIL_DEST = re.compile(r"vm([ubsi])([0-9]{1,15})")
_GREETINGS = {"u": "unavailable", "b": "busy", "s": "no", "i": "instructions"}


@dataclass(frozen=True)
class Note:
    """One FreePBX setting that was not carried over as FreePBX had it."""

    extension: str
    key: str  # the FreePBX key under AMPUSER/<extension>/followme/ (or the extension's own key)
    value: str
    outcome: str  # what the import did, in a sentence


@dataclass
class Imported:
    """The declarations of one host and what could not be carried over."""

    declarations: dict[str, dict] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    def note(self, extension: str, key: str, value: str, outcome: str) -> None:
        self.notes.append(Note(extension, key, value, outcome))

    @property
    def skipped(self) -> list[str]:
        """Extensions with Follow Me keys that were not imported at all."""
        return sorted({n.extension for n in self.notes if n.extension not in self.declarations}, key=ext_order)


def ext_order(extension: str):
    """Numeric order of extension numbers (then text, for keys that are not numbers)."""
    return (0, int(extension), len(extension), extension) if extension.isdigit() else (1, 0, 0, extension)


def group_keys(keys: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """{"2001/followme/grplist": v, "2001/voicemail": v} -> {"2001": {"followme/grplist": v, "voicemail": v}}.

    Keys are AMPUSER keys without the family (a leading "/AMPUSER/" is accepted and removed).
    """
    users: dict[str, dict[str, str]] = {}
    for name, value in keys.items():
        user, _slash, rest = name.removeprefix("/AMPUSER/").removeprefix("AMPUSER/").lstrip("/").partition("/")
        if user and rest:
            users.setdefault(user, {})[rest] = value
    return users


def convert(keys: Mapping[str, str], *, voicemail_context: str = "default") -> Imported:
    """Turn a PBX's AMPUSER keys into follow-me declarations and notes.

    voicemail_context: the followme_voicemail_context the declarations will be deployed with; a
    mailbox FreePBX keeps in another context is noted.
    """
    users = group_keys(keys)
    result = Imported()
    for user in sorted(users, key=ext_order):
        followme = {key[len("followme/"):]: value for key, value in users[user].items()
                    if key.startswith("followme/")}
        if not followme:
            continue
        if not _EXTENSION.fullmatch(user):
            result.note(user, "(extension)", user, "not imported: an extension here is 1 to 15 digits")
            continue
        declaration = _declaration(user, followme, users, voicemail_context, result)
        if declaration is not None:
            result.declarations[user] = declaration
    return result


def _declaration(ext: str, keys: Mapping[str, str], users: Mapping[str, Mapping[str, str]],
                 voicemail_context: str, result: Imported) -> dict | None:
    def note(key, outcome):
        result.note(ext, key, keys.get(key, ""), outcome)

    entries = _follow_list(ext, keys.get("grplist", ""), users, note)
    if not entries:
        note("grplist", "not imported: the follow-me list has no entry that can be dialed")
        return None
    declaration: dict[str, Any] = {"list": entries}

    # FreePBX's dialplan runs Follow Me when ddial exists and is not EXTENSION (its panel writes DIRECT).
    ddial = keys.get("ddial")
    enabled = ddial is not None and ddial.strip() != "EXTENSION"
    if ddial is None:
        result.note(ext, "ddial", "", "imported as enabled: false: without ddial FreePBX's dialplan rings "
                                      "the extension only")
    elif ddial.strip() not in ("DIRECT", "EXTENSION"):
        note("ddial", "imported as enabled: true: FreePBX's dialplan runs Follow Me for any ddial but EXTENSION")

    declaration["initial_ring_time"] = _seconds(keys, "prering", 0, low=0, high=60, note=note)
    strategy = keys.get("strategy", "").strip()
    if strategy not in STRATEGIES:
        note("strategy", f"imported as {FREEPBX_STRATEGY}, FreePBX's default strategy: "
                         f"{'not set' if not strategy else 'not a strategy FreePBX or this project knows'}")
        strategy = FREEPBX_STRATEGY
    declaration["strategy"] = strategy
    declaration["ring_time"] = _seconds(keys, "grptime", FREEPBX_RING_TIME, low=1, high=60, note=note)
    declaration["no_answer"] = _destination(keys.get("postdest", ""), users, voicemail_context, note)
    declaration["enabled"] = enabled

    grpconf = keys.get("grpconf", "").strip()
    declaration["confirm_calls"] = grpconf == "ENABLED"
    if grpconf not in ("", "ENABLED", "DISABLED"):
        note("grpconf", "imported as confirm_calls: false (FreePBX confirms only when grpconf is ENABLED)")

    declaration["cid_name_prefix"] = _optional(keys, "grppre", _CID_PREFIX, note=note, name="cid_name_prefix",
                                               accepted="1 to 20 letters, digits, spaces and . _ : + -")
    declaration["alert_info"] = _optional(
        keys, "dring", _ALERT_INFO, note=note, name="alert_info",
        accepted="1 to 128 characters from letters, digits and < > : / . _ ; = @ ? & % ~ + -")
    ringing = keys.get("ringing", "").strip()
    if ringing in ("", "Ring"):
        declaration["music_on_hold"] = None
    else:
        declaration["music_on_hold"] = _optional(keys, "ringing", _MOH, note=note, name="music_on_hold",
                                                 accepted="a class name of letters, digits, _ and -")
    declaration["announcement"] = _announcement(keys, note)
    declaration["confirm_prompt"] = _announcement(keys, note, key="remotealertmsg", field="confirm_prompt")
    declaration["too_late_prompt"] = _announcement(keys, note, key="toolatemsg", field="too_late_prompt")
    declaration["external_cid_mode"], declaration["external_cid_number"] = _caller_id(keys, note)
    declaration["schedule"] = None  # FreePBX's Follow Me has no schedule of its own
    for key in sorted(set(keys) - set(KEYS)):
        if keys[key].strip():
            note(key, "not carried over: no such setting here")
    return declaration


def _follow_list(ext: str, grplist: str, users: Mapping[str, Any], note: Callable) -> list[str]:
    """The follow-me list as FreePBX normalises it, then what this project's format accepts."""
    entries: list[str] = []
    for raw in grplist.split("-"):
        text = raw.strip()
        pound = text.endswith("#")
        digits = re.sub(r"[^0-9*+]", "", text)
        if not digits:
            if text:
                note("grplist", f"entry {json.dumps(text)} dropped: nothing to dial once FreePBX's "
                                "invalid characters are removed")
            continue
        if digits != text.removesuffix("#"):
            note("grplist", f"entry {json.dumps(text)} read as {json.dumps(digits + '#' * pound)}: FreePBX "
                            "removes every character but digits, * and +")
        if pound and digits == ext:
            entry = digits
            note("grplist", f"entry {json.dumps(text)} imported as {json.dumps(entry)}: the extension itself is "
                            "rung directly, as FreePBX does")
        elif pound:
            entry = digits + "#"
        elif digits in users and _EXTENSION.fullmatch(digits):
            entry = digits
        else:
            entry = digits + "#"
            note("grplist", f"entry {json.dumps(text)} imported as {json.dumps(entry)}: not an extension of this "
                            "PBX, so FreePBX dials it through the outbound routes")
        if entry in entries:
            note("grplist", f"entry {json.dumps(text)} dropped: already in the list")
            continue
        if not (_EXTENSION.fullmatch(entry) or _EXTERNAL.fullmatch(entry)):
            note("grplist", f"entry {json.dumps(entry)} dropped: an external number here is digits and *, "
                            "one optional leading +, at most 30, then #")
            continue
        entries.append(entry)
    if len(entries) > MAX_ENTRIES:
        note("grplist", f"entries {', '.join(entries[MAX_ENTRIES:])} dropped: a list holds at most {MAX_ENTRIES}")
        entries = entries[:MAX_ENTRIES]
    return entries


def _seconds(keys: Mapping[str, str], key: str, default: int, *, low: int, high: int, note: Callable) -> int:
    text = keys.get(key, "").strip()
    if text == "":
        if key == "prering":
            return 0  # FreePBX's dialplan skips the pre-ring when prering is empty
        note(key, f"imported as {default}, FreePBX's default: not set")
        return default
    if not re.fullmatch(r"[0-9]{1,6}", text):
        note(key, f"imported as {default}: not a number of seconds")
        return default
    value = int(text)
    if not low <= value <= high:
        clamped = min(max(value, low), high)
        note(key, f"imported as {clamped}: {low} to {high} seconds here")
        return clamped
    return value


def _optional(keys: Mapping[str, str], key: str, pattern: re.Pattern, *, note: Callable, name: str,
              accepted: str) -> str | None:
    value = keys.get(key, "")
    if value == "" or value.isspace():
        return None
    if pattern.fullmatch(value):
        return value
    stripped = value.strip()
    if stripped != value and pattern.fullmatch(stripped):
        note(key, f"imported as {name}: {json.dumps(stripped)} (surrounding spaces removed)")
        return stripped
    note(key, f"not carried over ({name} is null): {name} here is {accepted}")
    return None


def _announcement(keys: Mapping[str, str], note: Callable, key: str = "annmsg",
                  field: str = "announcement") -> str | None:
    """A sound file setting (annmsg, remotealertmsg, toolatemsg) as the field it becomes, or None."""
    value = keys.get(key, "").strip()
    if not value:
        return None
    if value.isdigit():
        note(key, f"not carried over ({field} is null): a recording id, with no file name here; "
                  f"set {field} to the recording's sound file")
        return None
    if _SOUND.fullmatch(value):
        note(key, f"imported as {field}: {json.dumps(value)}: make sure this sound file is on the PBX "
                  "you deploy to")
        return value
    note(key, f"not carried over ({field} is null): one sound file name here (path parts of letters, "
              "digits, _ and - joined by /), no list of files or other characters")
    return None


def _caller_id(keys: Mapping[str, str], note: Callable) -> tuple[str, str | None]:
    """(external_cid_mode, external_cid_number) from changecid and fixedcid."""
    changecid = keys.get("changecid", "").strip().lower()
    fixed = keys.get("fixedcid", "").strip()
    number = fixed if _CID_NUMBER.fullmatch(fixed) else None
    if fixed and number is None:
        note("fixedcid", "not carried over (external_cid_number is null): 1 to 20 digits, one optional leading +")
    if changecid not in CID_MODES:
        if changecid:
            note("changecid", "imported as external_cid_mode: default (FreePBX treats an unknown mode as default)")
        return "default", number
    mode = CID_MODES[changecid]
    if mode in ("fixed", "outside_fixed", "force_dialed") and number is None:
        note("changecid", f"imported as external_cid_mode: default: {changecid} sends fixedcid, which is not "
                          "a number here")
        return "default", None
    return mode, number


def _destination(postdest: str, users: Mapping[str, Mapping[str, str]], voicemail_context: str,
                 note: Callable) -> Any:
    text = postdest.strip()
    if not text:
        return "hangup"  # FreePBX hangs up when postdest is empty
    parts = text.split(",")
    if len(parts) != 3:
        note("postdest", "imported as hangup: not a destination context,extension,priority")
        return "hangup"
    context, target, priority = (part.strip() for part in parts)
    if (context, target, priority) == ("app-blackhole", "hangup", "1"):
        return "hangup"
    if context == "ext-local" and priority == "dest" and _EXTENSION.fullmatch(target):
        return _mailbox(target, users, voicemail_context, note=note,
                        what="the extension's normal no-answer handling")
    voicemail = _VOICEMAIL_DEST.fullmatch(target)
    if context == "ext-local" and voicemail and priority == "1":
        greeting, mailbox = voicemail.groups()
        result = _mailbox(mailbox, users, voicemail_context, note=note, what="voicemail")
        if isinstance(result, dict) and greeting != "u":
            note("postdest", f"imported as voicemail {mailbox} with the unavailable greeting: FreePBX played "
                             f"the {_GREETINGS[greeting]} greeting")
        return result
    if context == "from-did-direct" and priority == "1" and _EXTENSION.fullmatch(target):
        return {"extension": target}
    if _CONTEXT.fullmatch(context) and _GOTO_EXTENSION.fullmatch(target) and (
            _LABEL.fullmatch(priority) or (_NUMBER.fullmatch(priority) and 1 <= int(priority) <= 99999)):
        goto: dict[str, Any] = {"context": context, "extension": target,
                                "priority": int(priority) if priority.isdigit() else priority}
        note("postdest", f"imported as goto {context},{target},{goto['priority']}: a FreePBX dialplan location; "
                         "it must exist on the PBX you deploy to")
        return {"goto": goto}
    note("postdest", "imported as hangup: not a dialplan location this project accepts (context of letters, "
                     "digits, _ and -; extension of letters, digits, * # +; priority a number or label)")
    return "hangup"


def _mailbox(mailbox: str, users: Mapping[str, Mapping[str, str]], voicemail_context: str, *,
             note: Callable, what: str) -> Any:
    context = users.get(mailbox, {}).get("voicemail", "").strip()
    if context in ("", "novm"):
        note("postdest", f"imported as hangup: {what} of {mailbox} is its voicemail, and {mailbox} "
                         f"{'has no voicemail (novm)' if context else 'is not an extension with voicemail here'}")
        return "hangup"
    if context != voicemail_context:
        note("postdest", f"imported as voicemail {mailbox}: FreePBX kept the mailbox in context {json.dumps(context)}, "
                         f"the declarations use followme_voicemail_context {json.dumps(voicemail_context)}")
    return {"voicemail": mailbox}


# -- what validation refuses --------------------------------------------------------------------

def settle(result: Imported, errors_of: Callable[[dict], Iterable[tuple[str, str, str]]]) -> Imported:
    """Leave out whatever the project's validation refuses, with a note for each.

    errors_of(declarations) -> [(extension, field path, message)]: the validator with the host's
    policy (e.g. the toll-fraud deny list). A refused list entry is dropped; a refused no_answer
    becomes hangup; any other refusal leaves the extension out.
    """
    for _round in range(4):
        errors = [e for e in errors_of(result.declarations) if e[0] in result.declarations]
        if not errors:
            return result
        drop: dict[str, set[int]] = {}
        for extension, path, message in errors:
            declaration = result.declarations.get(extension)
            if declaration is None:
                continue
            entry = re.fullmatch(r"list\[(\d+)\]", path)
            if entry and int(entry.group(1)) < len(declaration["list"]):
                index = int(entry.group(1))
                drop.setdefault(extension, set()).add(index)
                result.note(extension, "grplist", declaration["list"][index],
                            f"entry {json.dumps(declaration['list'][index])} dropped: {message}")
            elif path.startswith("no_answer") and declaration.get("no_answer") != "hangup":
                result.note(extension, "postdest", _show(declaration["no_answer"]),
                            f"imported as hangup: {message}")
                declaration["no_answer"] = "hangup"
            else:
                result.note(extension, path, _show(declaration.get(path.split(".")[0].split("[")[0])),
                            f"not imported: {message}")
                del result.declarations[extension]
        for extension, indexes in drop.items():
            declaration = result.declarations.get(extension)
            if declaration is None:
                continue
            declaration["list"] = [e for i, e in enumerate(declaration["list"]) if i not in indexes]
            if not declaration["list"]:
                result.note(extension, "grplist", "", "not imported: no entry of the list is left")
                del result.declarations[extension]
    raise ValueError("the imported declarations still do not validate: "
                     + "; ".join(f"{e}: {p}: {m}" for e, p, m in errors_of(result.declarations)))


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# -- rendering ------------------------------------------------------------------------------------

def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if value == "hangup" or value in STRATEGIES:
        return value
    return _scalar(value)


def render_yaml(declarations: Mapping[str, Mapping], *, variable: str, host: str, report: str) -> str:
    """The declarations as a YAML file: extensions quoted and in numeric order, fields in schema order.

    The same declarations always give the same text (no dates), so a second import writes nothing.
    """
    lines = ["---",
             "# yaml-language-server: $schema=https://followme.example/schemas/followme.schema.json",
             f"# Follow Me of {host}, imported from FreePBX by playbooks/import_freepbx.yml.",
             f"# What could not be carried over as FreePBX had it: {report} beside this file.",
             "# Edit freely; a new import overwrites this file.",
             f"{variable}:" + (" {}" if not declarations else "")]
    for extension in sorted(declarations, key=ext_order):
        declaration = declarations[extension]
        lines.append(f"  {json.dumps(extension)}:")
        for name in FIELDS:
            if name in declaration:
                lines.append(f"    {name}: {_flow(declaration[name])}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")


def render_report(result: Imported, *, host: str, variable: str, yaml_name: str, total: int) -> str:
    """The report beside the YAML file, in Markdown; stable for the same input."""
    imported = len(result.declarations)
    disabled = sum(1 for d in result.declarations.values() if not d.get("enabled", True))
    skipped = result.skipped
    lines = [f"# Follow Me imported from FreePBX: {host}", "",
             f"FreePBX had Follow Me settings for {total} extension(s). {imported} are in `{variable}` in "
             f"{yaml_name} ({disabled} of them disabled, as in FreePBX); {len(skipped)} could not be imported"
             + (f": {', '.join(skipped)}." if skipped else "."), ""]
    if not result.notes:
        lines.append("Everything was carried over as FreePBX had it.")
        return "\n".join(lines) + "\n"
    lines += ["What was not carried over as FreePBX had it (read each line before you deploy):", "",
              "| extension | FreePBX key | FreePBX value | what the import did |", "|---|---|---|---|"]
    order = {key: index for index, key in enumerate(KEYS)}
    notes = sorted(enumerate(result.notes),
                   key=lambda item: (ext_order(item[1].extension), order.get(item[1].key, len(order)), item[0]))
    for _key, note in notes:
        value = f"`{_cell(note.value)}`" if note.value else "(empty)"
        lines.append(f"| {_cell(note.extension)} | {_cell(note.key)} | {value} | {_cell(note.outcome)} |")
    return "\n".join(lines) + "\n"
