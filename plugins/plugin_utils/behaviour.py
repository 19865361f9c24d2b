# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What callers will experience after a merge request: two revisions' declarations -> Markdown.

Pure Python, no Ansible: the action plugin `followme_plan` loads each revision's inventory with
Ansible and completes every declaration (declarations.Checker.check_host); this module compares
the two {host: {extension: complete declaration}} sets and writes, per host, the extensions added,
removed and changed, each change in words, and the new timeline of every added or changed
extension as a Mermaid Gantt chart (who rings when, and where the call goes if nobody answers).
The timeline itself comes from plan.py (build_plan, CallPlan.timeline, CallPlan.describe), the
same code the dialplan is rendered from.

Every value that reaches the Markdown is shown inside a code span or a code block, or is a
validated extension number, so an MR cannot put markup or HTML into the comment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from ansible_collections.followme.asterisk.plugins.module_utils.plan import NoAnswer, build_plan

#: Where each layer variable is normally written (README "Declarations").
LAYER_PLACES = {"followme": "group_vars", "followme_host": "host_vars"}

#: Role variables that change what callers experience (besides the declarations).
SETTINGS = ("followme_context", "followme_device", "followme_outbound_context", "followme_extension_context",
            "followme_voicemail_context", "followme_confirm_prompt", "followme_too_late_prompt",
            "followme_confirm_timeout")

#: At most this many Mermaid diagrams in one plan (GitHub refuses comments over 65,536 characters).
MAX_DIAGRAMS = 30
#: A list of more lines than this is folded into a <details> block.
FOLD_LINES = 15


@dataclass(frozen=True)
class HostState:
    """One host in one revision: its complete declarations and where each came from."""

    declarations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    origins: Mapping[str, tuple] = field(default_factory=dict)  # extension -> (layer variable, file or None)
    errors: Sequence[tuple] = ()  # (extension or "", message) of every validation error
    defaults: Mapping[str, Any] = field(default_factory=dict)  # followme_defaults as written
    settings: Mapping[str, Any] = field(default_factory=dict)  # SETTINGS the inventory sets


@dataclass(frozen=True)
class Revision:
    """One side of the comparison: {host of group pbx: HostState}."""

    name: str  # e.g. "main (1a2b3c4)" or "work tree"
    hosts: Mapping[str, HostState] = field(default_factory=dict)
    problems: Sequence[str] = ()  # revision-wide: the inventory is missing or did not parse


# -- words ---------------------------------------------------------------------------------
def _seconds(value) -> str:
    return f"{value} s"


def _on_off(value) -> str:
    return "on" if value else "off"


def _text(value) -> str:
    return "none" if value is None else code(json.dumps(value, ensure_ascii=False))


def _no_answer(value) -> str:
    try:
        return NoAnswer.from_declaration(value).describe()
    except (AttributeError, KeyError, TypeError, ValueError):
        return code(value)


#: (field, words, how a value is shown), in the order changes are told.
FIELDS = (
    ("enabled", "", None),
    ("initial_ring_time", "initial ring", _seconds),
    ("strategy", "strategy", str),
    ("ring_time", "ring time", _seconds),
    ("list", "list", None),
    ("no_answer", "no answer:", _no_answer),
    ("confirm_calls", "confirm calls", _on_off),
    ("cid_name_prefix", "caller-ID prefix", _text),
    ("alert_info", "alert-info", _text),
    ("music_on_hold", "music on hold", lambda value: "none (ringing)" if value is None else _text(value)),
    ("announcement", "announcement", _text),
)


def list_words(old: Sequence[str], new: Sequence[str]) -> str:
    """"+ 2003, − 909121234567#", then "order changed" and the new list when order matters."""
    old, new = list(old), list(new)
    parts = [f"+ {entry}" for entry in new if entry not in old]
    parts += [f"− {entry}" for entry in old if entry not in new]
    kept_old = [entry for entry in old if entry in new]
    kept_new = [entry for entry in new if entry in old]
    if kept_old != kept_new:
        parts.append("order changed")
    if kept_old != kept_new or new != kept_old + [entry for entry in new if entry not in old]:
        parts.append(f"now {', '.join(new)}")  # where the added entries ring matters to hunts
    return ", ".join(parts)


def change_words(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Each field that differs between two declarations, in words: ["initial ring 7 s → 5 s", ...].

    Fields missing on a side (a partial mapping such as followme_defaults) show as "unset". A
    declaration that is disabled on both sides changes nothing for callers; one that becomes
    disabled is told as that alone.
    """
    was, now = old.get("enabled", True), new.get("enabled", True)
    if "list" in new and not now:
        return [] if not was else ["disabled: calls get the site's normal handling"]
    words = []
    for name, label, show in FIELDS:
        if old.get(name) == new.get(name) and (name in old) == (name in new):
            continue
        if name == "enabled":
            words.append("enabled" if new.get(name, True) else "disabled: calls get the site's normal handling")
        elif name == "list" and isinstance(old.get(name), list) and isinstance(new.get(name), list):
            words.append(f"list {list_words(old[name], new[name])}")
        else:
            before = show(old[name]) if name in old and show else (code(old[name]) if name in old else "unset")
            after = show(new[name]) if name in new and show else (code(new[name]) if name in new else "unset")
            words.append(f"{label} {before} → {after}")
    return words


def settings_words(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Role variables of SETTINGS that differ: "followme_device `PJSIP/{extension}` → `SIP/{extension}`"."""
    return [f"{code(name)} {code(old[name]) if name in old else 'role default'} → "
            f"{code(new[name]) if name in new else 'role default'}"
            for name in SETTINGS if old.get(name) != new.get(name) or (name in old) != (name in new)]


# -- Markdown helpers ------------------------------------------------------------------------
def code(value) -> str:
    """`value` as an inline code span that no backtick in it can close early."""
    text = value if isinstance(value, str) else _literal(value)
    text = text.replace("\r", " ").replace("\n", " ")  # a code span is one line
    run = max((len(match) for match in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(key)}: {_literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return str(value)


def code_block(lines: Iterable[str]) -> str:
    """Lines in a fenced code block that none of them can close."""
    lines = list(lines)
    run = max((len(match) for line in lines for match in re.findall(r"`{3,}|~{3,}", line)), default=0)
    fence = "`" * max(3, run + 1)
    return "\n".join([fence + "text", *lines, fence])


def extension_ranges(extensions: Sequence[str]) -> str:
    """"2001–2003, 2010" for numbered extensions (same length, consecutive numbers make a range)."""
    runs: list[list[str]] = []
    for extension in sorted(set(extensions), key=_key):
        last = runs[-1][-1] if runs else ""
        if (extension.isdigit() and last.isdigit() and len(extension) == len(last)
                and int(extension) == int(last) + 1):
            runs[-1].append(extension)
        else:
            runs.append([extension])
    return ", ".join(run[0] if len(run) == 1 else ", ".join(run) if len(run) == 2 else f"{run[0]}–{run[-1]}"
                     for run in runs)


def _fold(summary: str, lines: Sequence[str]) -> list[str]:
    """Lines as they are, or in a <details> block when there are many."""
    if len(lines) <= FOLD_LINES:
        return list(lines)
    return [f"<details><summary>{summary}</summary>", "", *lines, "", "</details>"]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


# -- Mermaid ---------------------------------------------------------------------------------
_MERMAID_UNSAFE = {"#": "＃", ":": "：", ";": "；", "%": "％", "\n": " ", "\r": " ", "`": "'"}


def mermaid_text(text: str) -> str:
    """Text for a Mermaid Gantt title, section or task name: # : ; % end or comment out a token there."""
    return "".join(_MERMAID_UNSAFE.get(char, char) for char in str(text)).strip()


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def leg_name(entry: str) -> str:
    return f"{entry[:-1]} (external)" if entry.endswith("#") else entry


def gantt(extension: str, declaration: Mapping[str, Any]) -> str:
    """The timeline of a call to `extension` that nobody answers, as a Mermaid Gantt chart.

    One section per leg (each ring of it a bar, labelled with its seconds), then section
    "no answer" with a milestone where the call goes when the last step ends. Times are
    clock times of one day from 00:00:00 (dateFormat HH:mm:ss, parsed and shown in the same
    local time zone, so the axis reads minutes:seconds from the start of the call).
    """
    plan = build_plan(extension, declaration)
    rings, end = plan.timeline()
    lines = ["gantt",
             f"    title {mermaid_text(f'{extension}, nobody answers ({plan.strategy})')}",
             "    dateFormat HH:mm:ss",
             "    axisFormat %M:%S",
             "    todayMarker off"]
    legs: dict[str, list] = {}
    for ring in rings:
        legs.setdefault(ring.entry, []).append(ring)
    for entry, leg_rings in legs.items():
        lines.append(f"    section {mermaid_text(leg_name(entry))}")
        lines += [f"    {ring.start}–{ring.end} s : {_clock(ring.start)}, {_clock(ring.end)}" for ring in leg_rings]
    lines.append("    section no answer")
    lines.append(f"    {mermaid_text(f'{plan.no_answer.describe()} at {end} s')} : milestone, {_clock(end)}, "
                 f"{_clock(end)}")
    return "\n".join(lines)


# -- comparison --------------------------------------------------------------------------------
@dataclass
class HostChanges:
    added: list = field(default_factory=list)  # extensions
    removed: list = field(default_factory=list)
    changed: dict = field(default_factory=dict)  # extension -> [words]

    @property
    def count(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


def _key(extension: str):
    return (len(extension), extension)


def compare_host(base: HostState, head: HostState) -> HostChanges:
    """Extensions added, removed and changed (with the words of each change) from base to head.

    An extension whose base declaration had an error counts as changed ("was invalid"); a host-wide
    error in base (no declaration could be completed) makes every head extension such a change.
    """
    broken = {extension for extension, _message in base.errors}
    changes = HostChanges()
    for extension in sorted(set(base.declarations) | set(head.declarations) | (broken - {""}), key=_key):
        old, new = base.declarations.get(extension), head.declarations.get(extension)
        if new is None:
            if old is not None and extension not in broken:
                changes.removed.append(extension)
            continue
        if extension in broken or ("" in broken and old is None):
            changes.changed[extension] = ["was invalid in the base revision"]
        elif old is None:
            changes.added.append(extension)
        else:
            words = change_words(old, new)
            old_layer, new_layer = base.origins.get(extension, (None,))[0], head.origins.get(extension, (None,))[0]
            if old_layer != new_layer and old_layer and new_layer:
                words.append(f"now declared in {code(new_layer)} instead of {code(old_layer)}"
                             + ("" if words else " (same behaviour)"))
            if words:
                changes.changed[extension] = words
    return changes


def _origin(state: HostState, extension: str) -> str:
    layer, path = (tuple(state.origins.get(extension, ())) + (None, None))[:2]
    if not layer:
        return ""
    place = code(path) if path else LAYER_PLACES.get(layer, "")
    return f" ({code(layer)}{', ' + place if place else ''})"


def _describe(extension: str, declaration: Mapping[str, Any]) -> str:
    if not declaration.get("enabled", True):
        return "disabled (calls get the site's normal handling)"
    return build_plan(extension, declaration).describe().split(": ", 1)[1]


def _grouped(items: Sequence[tuple]) -> list[str]:
    """Bullet lines for (extension, origin text, words, plan in words) items.

    Extensions with the same words and origin share a line (a changed default touches many);
    an extension alone on its line also gets its whole plan in words, unless there are more lines
    than FOLD_LINES (then the words of the change are all, to keep the comment short).
    """
    groups: dict[tuple, list] = {}
    for extension, origin, words, now in items:
        groups.setdefault((origin, words), []).append((extension, now))
    lines = []
    brief = len(groups) > FOLD_LINES
    for (origin, words), members in groups.items():
        if len(members) == 1 and brief:
            lines.append(f"- **{members[0][0]}**{origin}: {words}")
        elif len(members) == 1:
            extension, now = members[0]
            lines.append(f"- **{extension}**{origin}: {words}{now}")
        else:
            count = f" ({len(members)} extensions)" if len(members) > 2 else ""
            ranges = extension_ranges([extension for extension, _change in members])
            lines.append(f"- **{ranges}**{count}{origin}: {words}")
    return lines


class _Diagrams:
    """Diagram budget shared by all hosts of one plan."""

    def __init__(self, limit: int):
        self.limit, self.drawn, self.left_out = limit, 0, 0

    def block(self, extension: str, declaration: Mapping[str, Any], why: str) -> list[str]:
        if not declaration.get("enabled", True):
            return []
        if self.drawn >= self.limit:
            self.left_out += 1
            return []
        self.drawn += 1
        return [f"<details><summary>{extension} ({why}): new timeline</summary>", "", "```mermaid",
                gantt(extension, declaration), "```", "", "</details>", ""]


def _host_section(host: str, base: Optional[HostState], head: Optional[HostState], diagrams: _Diagrams) -> list[str]:
    lines = []
    if head is None:
        lines += [f"### {code(host)}: host removed", "",
                  f"No longer in group `pbx`: its {_plural(len(base.declarations), 'follow-me declaration')} "
                  "stay on the PBX as last deployed (nothing deploys to a host outside the inventory).", ""]
        return lines
    if head.errors:
        lines += [f"### {code(host)}: ❌ {_plural(len(head.errors), 'validation error')}", "",
                  "Nothing can be deployed while these stand; this host's plan is shown once they are fixed.", "",
                  code_block(message for _extension, message in head.errors), ""]
        return lines
    base = base if base is not None else HostState()
    changes = compare_host(base, head)
    new_host = not base.declarations and not base.errors
    counts = [f"{len(changes.added)} added", f"{len(changes.removed)} removed", f"{len(changes.changed)} changed"]
    title = "new host, " + _plural(len(changes.added), "extension") if new_host else ", ".join(counts)
    lines += [f"### {code(host)}: {title}", ""]
    if base.errors:
        lines += ["⚠️ The base revision had validation errors on this host; extensions they named are shown "
                  "as changed:", "", code_block(message for _extension, message in base.errors), ""]
    defaults = [] if new_host else change_words(base.defaults, head.defaults)
    if defaults:
        lines += [f"- `followme_defaults`: {'; '.join(defaults)}"]
    settings = [] if new_host else settings_words(base.settings, head.settings)
    if settings:
        lines += [f"- role variables: {'; '.join(settings)}"]
    if defaults or settings:
        lines.append("")
    if changes.added:
        items = [(extension, _origin(head, extension), _describe(extension, head.declarations[extension]), "")
                 for extension in changes.added]
        lines += ["**Added**", "", *_fold(f"{len(changes.added)} added extensions", _grouped(items)), ""]
    if changes.removed:
        items = [(extension, _origin(base, extension), "was " + _describe(extension, base.declarations[extension]),
                  "") for extension in changes.removed]
        lines += ["**Removed** (calls to them get the site's normal handling)", "",
                  *_fold(f"{len(changes.removed)} removed extensions", _grouped(items)), ""]
    if changes.changed:
        items = [(extension, _origin(head, extension), "; ".join(words),
                  " — now: " + _describe(extension, head.declarations[extension])
                  if head.declarations[extension].get("enabled", True) else "")
                 for extension, words in changes.changed.items()]
        lines += ["**Changed**", "", *_fold(f"{len(changes.changed)} changed extensions", _grouped(items)), ""]
    for extension in changes.added:
        lines += diagrams.block(extension, head.declarations[extension], "added")
    for extension in changes.changed:
        lines += diagrams.block(extension, head.declarations[extension], "changed")
    return lines


def plan_markdown(base: Revision, head: Revision, *, max_diagrams: int = MAX_DIAGRAMS) -> str:
    """The Markdown of a merge request's behaviour plan, from base to head."""
    hosts = sorted(set(base.hosts) | set(head.hosts))
    diagrams = _Diagrams(max_diagrams)
    sections, unchanged = [], []
    totals = {"added": 0, "removed": 0, "changed": 0}
    host_totals = {"changed": 0, "added": 0, "removed": 0, "invalid": 0}
    for host in hosts:
        old, new = base.hosts.get(host), head.hosts.get(host)
        if new is not None and not new.errors and old is not None:
            changes = compare_host(old, new)
            if (not changes.count and not old.errors and not change_words(old.defaults, new.defaults)
                    and not settings_words(old.settings, new.settings)):
                unchanged.append(host)
                continue
        if new is not None and not new.errors:
            changes = compare_host(old or HostState(), new)
            for kind in totals:
                totals[kind] += len(getattr(changes, kind))
        kind = "removed" if new is None else "invalid" if new.errors else "added" if old is None else "changed"
        host_totals[kind] += 1
        sections += _host_section(host, old, new, diagrams)

    lines = [f"## Follow Me plan: {code(base.name)} → {code(head.name)}", ""]
    for revision, label in ((base, "base"), (head, "head")):
        if revision.problems:
            lines += [f"{'❌' if revision is head else '⚠️'} The {label} revision's inventory:", "",
                      code_block(revision.problems), ""]
    if host_totals["invalid"] or (head.problems and not head.hosts):
        lines += ["**❌ The head revision does not validate: it cannot be deployed as it is.**", ""]
    summary = [f"{host_totals[kind]} {kind}" for kind in ("changed", "added", "removed", "invalid")
               if host_totals[kind]] + [f"{len(unchanged)} unchanged"]
    lines += [f"Hosts of group `pbx`: {', '.join(summary)}. Extensions: {totals['added']} added, "
              f"{totals['removed']} removed, {totals['changed']} changed.", ""]
    if not sections and not head.problems:
        lines += ["No change to what callers experience.", ""]
    lines += sections
    if diagrams.left_out:
        lines += [f"{_plural(diagrams.left_out, 'more timeline')} not drawn (at most {diagrams.limit} per plan); "
                  "the words above say what changed.", ""]
    if unchanged:
        lines += [f"Unchanged: {', '.join(code(host) for host in unchanged)}.", ""]
    lines += ["<sub>Timelines: a call nobody answers, every device available; time in minutes:seconds from "
              "the call's start. Written by <code>followme.asterisk.plan</code>.</sub>"]
    return "\n".join(lines) + "\n"
