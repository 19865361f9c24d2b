# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a host's follow-me variables from an action plugin's task_vars, on the controller.

The declarations are read from task_vars directly instead of through module arguments: a
10,000-entry mapping templated into arguments costs seconds. Only the strings that hold a template
are templated, each on its own (templating the mapping that holds one would render all of it: about
20 s at 10,000 declarations); every other value is taken as the inventory holds it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping


def has_template(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(has_template(key) or has_template(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_template(item) for item in value)
    return False


def plain(value):
    """Inventory values as plain Python (dict, list, str, int, float, bool, None), keeping their types."""
    if isinstance(value, Mapping):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def resolved(value, template: Callable[[Any], Any]):
    """plain(value) in one pass, where each string holding a template is replaced by plain(template(it)).

    Exact-type and C-level isinstance checks first: this walks every value of every declaration."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            return plain(template(value))
        return value if type(value) is str else str(value)
    if isinstance(value, dict):
        return {resolved(key, template): resolved(item, template) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolved(item, template) for item in value]
    if isinstance(value, int):
        return value if type(value) is int else int(value)
    if isinstance(value, Mapping):
        return {resolved(key, template): resolved(item, template) for key, item in value.items()}
    return plain(value)


def read_variables(task_vars: Mapping[str, Any], names: Iterable[str],
                   template: Callable[[Any], Any]) -> dict[str, Any]:
    """{name: plain value} of the names task_vars holds; each string with a template is templated."""
    return {name: resolved(task_vars[name], template) for name in names if name in task_vars}
