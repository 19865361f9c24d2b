# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a host's follow-me variables from an action plugin's task_vars, on the controller.

The declarations are read from task_vars directly instead of through module arguments: a
10,000-entry mapping templated into arguments costs seconds. Only values that hold a template
are templated; every other value is taken as the inventory holds it.

Where a value came from: ansible-core 2.19 tags every value loaded from YAML with its Origin
(file, line, column); ansible-core 2.17 and 2.18 keep `ansible_pos` on mappings, lists and
strings only. origin_of() reads whichever is there, so messages name the file and line where
Ansible allows, and say nothing of it where it does not. duplicate_keys() re-reads those files
for the one thing a loaded value cannot tell: a key written twice, of which YAML kept the last.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Callable, Iterable, Mapping

import yaml

from . import cache
from .declarations import MAX_NODES, bounded_plain

try:  # ansible-core >= 2.19: every value from YAML carries its Origin
    from ansible._internal._datatag._tags import Origin
except Exception:  # noqa: BLE001 (older ansible-core, or an internal API that moved: no origins)
    Origin = None

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def plain(value):
    """Inventory values as plain Python (dict, list, str, int, float, bool, None), keeping their types."""
    copied, problems = bounded_plain(value, budget=[MAX_NODES])
    if problems:
        raise ValueError(_problems_text(problems))
    return copied


def read_variables(task_vars: Mapping[str, Any], names: Iterable[str],
                   template: Callable[[Any], Any]) -> dict[str, Any]:
    """{name: plain value} of the names task_vars holds, each string with a template templated on its own
    (read_templated); ValueError naming the variable and field of a template error or a bound crossed."""
    values, problems = read_templated(task_vars, names, template)
    if problems:
        raise ValueError(_problems_text(problems))
    return values


def _problems_text(problems) -> str:
    return "; ".join(f"{'.'.join(map(str, path))} {problem}" for path, problem in problems)


def read_templated(task_vars: Mapping[str, Any], names: Iterable[str], template: Callable[[Any], Any]):
    """({name: plain value}, [(location, problem)]) of the names task_vars holds.

    Each string that holds a template is rendered on its own, so that a template error names the
    variable, extension and field it sits in; the failing string is kept as written, and what a
    template renders is not rendered again. Values are copied by the bounded walk of
    declarations.bounded_plain: deep nesting and YAML alias bombs end in a problem, not a traceback.
    """
    problems: list[tuple[tuple, str]] = []
    rendered: set[tuple] = set()

    def leaf(path, text):
        if ("{{" not in text and "{%" not in text) or any(path[:n] in rendered for n in range(1, len(path))):
            return text, None
        rendered.add(path)
        try:
            return template(text), None
        except Exception as exc:  # noqa: BLE001 (any template error becomes a message naming the field)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return str(text), f"template error: {first}"

    values = {}
    budget = [MAX_NODES]
    for name in names:
        if name in task_vars:
            values[name], walk = bounded_plain(task_vars[name], budget=budget, path=(name,), leaf=leaf)
            problems += walk
    return values, problems


# -- where values came from -------------------------------------------------------------------

def origin_of(value) -> tuple[str, int | None, int | None] | None:
    """(file, line, column) a value was loaded from, when Ansible kept it."""
    if Origin is not None:
        try:
            tag = Origin.get_tag(value)
        except Exception:  # noqa: BLE001
            return None
        if tag is not None and tag.path:
            return tag.path, tag.line_num, tag.col_num
        return None
    position = getattr(value, "ansible_pos", None)  # ansible-core < 2.19
    if isinstance(position, tuple) and len(position) == 3 and position[0]:
        return position[0], position[1], position[2]
    return None


def locate(task_vars: Mapping[str, Any], location: tuple):
    """(value, origin) at a location (variable, key, ...) of the host's variables as Ansible holds them:
    the deepest origin found on the way, and the value there (None when the path ends early)."""
    if not location or location[0] not in task_vars:
        return None, None
    value = task_vars[location[0]]
    found = origin_of(value)
    for key in location[1:]:
        if isinstance(value, Mapping) and key in value:
            for candidate in value:
                if candidate == key:
                    found = origin_of(candidate) or found
                    break
            value = value[key]
        elif isinstance(value, (list, tuple)) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            return None, found
        found = origin_of(value) or found
    return value, found


def origin_text(origin, root: str = "") -> str:
    """file:line:column, the file relative to root when under it."""
    path, line, column = origin
    if root and path.startswith(root.rstrip("/") + "/"):
        path = path[len(root.rstrip("/")) + 1:]
    return ":".join(str(part) for part in (path, line, column) if part)


def written(value, origin, lines: dict) -> str | None:
    """A number as the user wrote it (0640, not 416; 0x10, not 16), read back from its file, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not origin or not origin[1] or not origin[2]:
        return None
    path, line, column = origin
    if path not in lines:
        try:
            with open(path, encoding="utf-8") as handle:
                lines[path] = handle.read().splitlines()
        except (OSError, UnicodeDecodeError):
            lines[path] = []
    text = lines[path][line - 1] if 0 < line <= len(lines[path]) else ""
    token = text[column - 1:]
    for stop in (",", "]", "}", " #", "\t"):
        token = token.split(stop)[0]
    token = token.strip()
    return token if token and token != str(value) and token[:1] in "+-0123456789." else None


# -- duplicate keys -----------------------------------------------------------------------------

_RESOLVER = yaml.resolver.Resolver()
_PLAIN_TAGS: dict[str, str] = {}


def _key_identity(event) -> tuple:
    """What a scalar key becomes once loaded: "2001" (a string) and 2001 (an integer) are two keys."""
    value = event.value
    if not event.style and event.implicit[0]:
        tag = _PLAIN_TAGS.get(value)
        if tag is None:
            tag = _PLAIN_TAGS[value] = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    else:
        tag = event.tag or "tag:yaml.org,2002:str"
    return tag, value


_MAP, _SEQ = 0, 1


def duplicate_keys(path: str, anchors: Mapping[tuple[int, int], str], names: Iterable[str]):
    """Keys written twice in one mapping of a YAML file, as [(location, key, first line, line, column)].

    Only mappings inside the values that start at anchors ({(line, column): variable name}) count,
    and the variable names themselves written twice in one mapping. The file is read as a stream of
    parser events: nothing is built, aliases are not expanded, time is linear in the file's size.
    The answer is kept in the user's cache, keyed by a digest of the file's bytes, the question and
    this code, so a file read before (a rerun, another host of the same group) is not parsed again.
    """
    names = set(names)
    found: list = []
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return found
    question = json.dumps([sorted([line, column, name] for (line, column), name in anchors.items()), sorted(names)])
    key = cache.digest([sys.modules[__name__]], question, data)
    cached = cache.read("duplicate-keys", key)
    with contextlib.suppress(TypeError, ValueError):  # a damaged answer: parse again
        if isinstance(cached, list):
            return [(tuple(location), name, first, line, column) for location, name, first, line, column in cached]
    try:
        _scan(yaml.parse(text, Loader=_Loader), anchors, names, found)
    except (yaml.YAMLError, IndexError, KeyError, TypeError):
        return found
    cache.write("duplicate-keys", key, found)
    return found


def _scan(events, anchors, names, found) -> None:
    # A frame: [kind, role, location, watched, keys, expect_key, key, index]
    scalar, alias = yaml.ScalarEvent, yaml.AliasEvent
    starts = {yaml.MappingStartEvent: _MAP, yaml.SequenceStartEvent: _SEQ}
    ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    resets = (yaml.DocumentStartEvent, yaml.DocumentEndEvent)
    stack: list[list] = []
    for event in events:
        kind = type(event)
        if kind is scalar or kind is alias or kind in starts:
            parent = stack[-1] if stack else None
            role, location = "item", None
            if parent is not None and parent[0] == _MAP:
                if parent[5]:
                    role = "key"
                    parent[6] = None
                    if kind is scalar:
                        identity = _key_identity(event)
                        line = event.start_mark.line + 1
                        keys = parent[4]
                        if identity in keys and event.value != "<<" and (parent[3] or event.value in names):
                            place = (*parent[2], event.value) if parent[2] else (event.value,)
                            found.append((place, event.value, keys[identity], line, event.start_mark.column + 1))
                        keys.setdefault(identity, line)
                        parent[6] = event.value
                else:
                    role = "value"
                    if parent[2] is not None and parent[6] is not None:
                        location = (*parent[2], parent[6])
            elif parent is not None:
                if parent[2] is not None:
                    location = (*parent[2], parent[7])
                parent[7] += 1
            if kind in starts:
                anchored = anchors.get((event.start_mark.line + 1, event.start_mark.column + 1)) if anchors else None
                if anchored:
                    location = (anchored,)
                watched = bool(anchored) or (parent is not None and parent[3] and role != "key")
                stack.append([starts[kind], role, location if role != "key" else None, watched, {}, True, None, 0])
            elif parent is not None and parent[0] == _MAP:
                parent[5] = role == "value"
        elif kind in ends:
            frame = stack.pop()
            if stack and stack[-1][0] == _MAP:
                stack[-1][5] = frame[1] == "value"
        elif kind in resets:
            stack = []
