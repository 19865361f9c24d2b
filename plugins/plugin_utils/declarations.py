"""Validate the follow-me variables of PBX hosts and complete the declarations.

Runs on the controller only (it needs jsonschema). The JSON Schema in
schemas/followme.schema.json is the one source of truth for the format: field
rules, role variables and defaults come from it; this module adds what a schema
cannot say (the cross-checks of ../shared/SPEC.md, the toll-fraud policy on every
way a declaration can make Asterisk dial, file modes, unknown variable names) and
turns every problem into a message that names host, extension, field path and
offending value.

Nothing here trusts the shape or size of its input: values are copied by a bounded,
non-recursive walk (deep nesting and YAML alias bombs end in an error, not a
RecursionError or an exponential walk), and allow/deny patterns that could take
exponential time are refused before they are ever run.
"""

from __future__ import annotations

import copy
import difflib
import gc
import json
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # Python < 3.11
    import sre_constants as _sre  # pylint: disable=deprecated-module
    import sre_parse as _sre_parse  # pylint: disable=deprecated-module

try:
    import fastjsonschema
    import jsonschema
    from jsonschema import Draft7Validator, ValidationError
except ImportError as exc:  # the controller lacks a library: MissingLibrary says which, in one line
    LIBRARY_IMPORT_ERROR: ImportError | None = exc
    Draft7Validator = ValidationError = None
else:
    LIBRARY_IMPORT_ERROR = None

#: pip package (with the range the collection is tested with) of each library imported above.
PIP_PACKAGES = {"jsonschema": "jsonschema>=4.18", "fastjsonschema": "fastjsonschema>=2.16"}


class MissingLibrary(RuntimeError):
    """A library the controller needs is not installed; the message names the pip package."""


def require_libraries(python: str) -> None:
    """Raise MissingLibrary naming the pip package when jsonschema or fastjsonschema is missing."""
    if LIBRARY_IMPORT_ERROR is not None:
        name = (LIBRARY_IMPORT_ERROR.name or "").split(".", maxsplit=1)[0]
        package = PIP_PACKAGES.get(name, name or str(LIBRARY_IMPORT_ERROR))
        raise MissingLibrary(f"followme needs the Python library {name or package} on the controller "
                             f"({python}): install it with `{python} -m pip install '{package}'`")


#: Role variables the schema covers, besides followme and followme_defaults.
POLICY_VARIABLES = ("followme_known_extensions", "followme_external_allow", "followme_external_deny")
#: How the site's PBX is wired and where the file goes (the schema has their rules and defaults).
ROLE_VARIABLES = ("followme_context", "followme_device", "followme_outbound_context", "followme_extension_context",
                  "followme_voicemail_context", "followme_confirm_prompt", "followme_too_late_prompt",
                  "followme_confirm_timeout", "followme_toggle_code", "followme_toggle_reset", "followme_config_dir",
                  "followme_include_file",
                  "followme_allow_empty", "followme_file_owner", "followme_file_group", "followme_file_mode")
#: Declaration layers, merged by extension in this order (a later layer's declaration wins).
LAYERS = ("followme", "followme_host")
VARIABLES = LAYERS + ("followme_defaults",) + POLICY_VARIABLES + ROLE_VARIABLES

#: Bounds of the walk over one host's variables: the format itself is 6 levels deep, and a host
#: with 10,000 declarations of every field holds about 400,000 values.
MAX_DEPTH = 32
MAX_NODES = 1_000_000
#: Allow/deny patterns may hold at most this many repeats of variable length (see regex_problem).
MAX_VARIABLE_REPEATS = 3
#: Characters an outbound route may let through and a trunk may drop: deny patterns are also
#: matched against an entry without them (the final # of an entry stays).
IGNORABLE = "*+#"


def layered(variables: Mapping[str, Any]) -> dict[str, str]:
    """{extension: the layer variable its declaration comes from}, for valid layer mappings."""
    origin: dict[str, str] = {}
    for layer in LAYERS:
        value = variables.get(layer)
        if isinstance(value, Mapping):
            origin.update((extension, layer) for extension in value)
    return origin


@dataclass(frozen=True)
class DeclarationError:
    """One problem with one value of one host."""

    host: str
    extension: str  # "" when the problem is with a host-wide variable
    path: str  # field path inside the declaration, or the variable name
    value: Any
    message: str  # what is wrong and what would be accepted
    location: tuple = ()  # (variable, key, ...): where the value sits in the host's variables
    origin: str = ""  # file:line:column the value was read from, when Ansible kept it
    written: str | None = None  # the value as the user wrote it, when that differs from what YAML made of it

    def __str__(self) -> str:
        where = f"extension {self.extension}: " if self.extension else ""
        shown = self.written if self.written is not None else _show(self.value)
        at = f" (at {self.origin})" if self.origin else ""
        return f"{self.host}: {where}{self.path} = {shown}: {self.message}{at}"


@dataclass
class Result:
    """What checking one host found."""

    declarations: dict[str, dict]  # complete declarations, enabled or not
    errors: list[DeclarationError]
    warnings: list[DeclarationError] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # every role variable, the schema's default if unset


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- bounded copies ---------------------------------------------------------------------------

def _plain_key(key):
    """A mapping key as plain Python: a scalar as _plain_scalar makes it, anything else as its repr."""
    return _plain_scalar(key) if isinstance(key, _SCALARS) else repr(key)


def _plain_scalar(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def _materialize(path: tuple, link) -> tuple:
    keys = []
    while link is not None:
        keys.append(link[0])
        link = link[1]
    return path + tuple(reversed(keys))


_SCALARS = (str, int, float, bool, type(None))
_TEXT, _NUMBER, _OTHER = "text", "number", "other"
_CATEGORIES: dict[type, str] = {}


def _category(kind: type) -> str:
    """How bounded_plain copies a value of this type: text, a number (bool and None included), or other."""
    if issubclass(kind, str):
        return _TEXT
    if kind is type(None) or issubclass(kind, (bool, int, float)):
        return _NUMBER
    return _OTHER


def bounded_plain(value, *, budget: list[int], path: tuple = (), max_depth: int = MAX_DEPTH,
                  leaf: Callable[[tuple, str], tuple[Any, str | None]] | None = None):
    """A plain-Python copy (dict, list, str, int, float, bool, None) of value, walked without recursion.

    budget is a one-item list, the number of values the walk may still visit (shared by the calls for
    one host); leaf(path, string) may replace a string holding "{" (e.g. render its template) and return
    a problem. Returns (copy, [(path, problem)]). Deeper than max_depth, the copy holds None and one
    problem is returned; past the budget, the copy is None and the walk stops.
    """
    # The copy is a tree (no reference cycles): the garbage collector, which the many new objects would
    # set off over the controller's whole inventory (a third of the walk's time at 10,000 declarations,
    # and its spread), has nothing to find here.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _bounded_plain(value, budget, path, max_depth, leaf)
    finally:
        if collecting:
            gc.enable()


def _bounded_plain(value, budget, path, max_depth, leaf):
    problems: list[tuple[tuple, str]] = []
    too_deep = False
    root: list = [None]
    stack: list = [(value, root, 0, None, 0)]
    count = budget[0]
    while stack:
        item, parent, slot, link, depth = stack.pop()
        count -= 1
        if count < 0:
            budget[0] = count
            problems.append((path, f"holds more than {MAX_NODES:,} values in all (a YAML alias bomb?): "
                                   "not checked further"))
            return None, problems
        kind = type(item)
        category = _CATEGORIES.get(kind)
        if category is None:
            category = _CATEGORIES[kind] = _category(kind)
        if category is _TEXT:  # str, or a str subclass (ansible-core 2.19 tags every value it loaded)
            if leaf is None or "{" not in item:
                parent[slot] = item if kind is str else str(item)
                continue
        elif category is _NUMBER:
            parent[slot] = item if kind in _SCALARS else _plain_scalar(item)
            continue
        if leaf is not None and isinstance(item, str) and "{" in item:
            item, problem = leaf(_materialize(path, link), item)
            if problem:
                problems.append((_materialize(path, link), problem))
        if kind is dict or kind is list or isinstance(item, (dict, list, tuple, Mapping)):
            if depth >= max_depth:
                if not too_deep:  # once per walk: an alias bomb is deep in many places
                    problems.append((_materialize(path, link),
                                     f"is nested more than {max_depth} levels deep (the format needs 6): "
                                     "not checked further"))
                too_deep = True
                parent[slot] = None
                continue
            if isinstance(item, dict) or (not isinstance(item, (list, tuple)) and isinstance(item, Mapping)):
                copied = {}
                entries = []
                for raw_key, sub in item.items():
                    key = (raw_key if raw_key.__class__ is str else
                           str(raw_key) if isinstance(raw_key, str) else _plain_key(raw_key))
                    copied[key] = None
                    entries.append((key, sub))
            else:
                copied = [None] * len(item)
                entries = list(enumerate(item))
            parent[slot] = copied
            depth += 1
            for key, sub in reversed(entries):
                stack.append((sub, copied, key, (key, link), depth))
        else:
            parent[slot] = _plain_scalar(item)
    budget[0] = count
    return root[0], problems


# -- regular expressions of the policy --------------------------------------------------------

_REPEATS = {getattr(_sre, name) for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(_sre, name)}
_GROUPREFS = {getattr(_sre, name) for name in ("GROUPREF", "GROUPREF_EXISTS") if hasattr(_sre, name)}


def _subpatterns(op, av) -> list:
    """The parsed subpatterns directly inside one item of a parsed pattern."""
    if op in _REPEATS:
        return [av[2]]
    if op == _sre.SUBPATTERN:
        return [av[-1]]
    if op == _sre.BRANCH:
        return list(av[1])
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return [av[1]]
    if op == getattr(_sre, "ATOMIC_GROUP", None):
        return [av]
    return []


def _ambiguous(parsed) -> str | None:
    """Why a repeated part could match one string in many ways (variable repeat or alternation), or None."""
    for op, av in parsed:
        if op in _REPEATS and av[0] != av[1]:
            return "a repeat inside a repeat"
        if op == _sre.BRANCH:
            return "an alternation (|) inside a repeat"
        for sub in _subpatterns(op, av):
            reason = _ambiguous(sub)
            if reason:
                return reason
    return None


def regex_problem(pattern: str) -> str | None:
    """Why an allow/deny pattern is refused, or None.

    Python's re backtracks: a repeat that holds another variable repeat or an alternation, as in
    (0+)+ or (0|00)+, takes exponential time on a string that almost matches, and many variable
    repeats in a row take polynomial time of a high degree. Such patterns are refused, as are
    back-references, so that matching any entry (at most 41 characters) stays fast.
    """
    try:
        parsed = _sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        return f"not a valid regular expression ({exc})"
    variable = 0
    stack = [parsed]
    while stack:
        for op, av in stack.pop():
            if op in _GROUPREFS:
                return "back-references are not supported in followme_external_allow/deny patterns"
            if op in _REPEATS:
                if av[0] != av[1]:
                    variable += 1
                if av[1] > 1:
                    reason = _ambiguous(av[2])
                    if reason:
                        return (f"{reason} can take exponential time on Python's re; write it without "
                                "nested repeats, e.g. [0-9]+ instead of ([0-9]+)+")
            stack.extend(_subpatterns(op, av))
    if variable > MAX_VARIABLE_REPEATS:
        return (f"{variable} repeats of variable length (*, +, ?, {{m,n}}); at most {MAX_VARIABLE_REPEATS} "
                "are accepted, so that matching stays fast")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        return f"not a valid regular expression ({exc})"
    return None


def deny_forms(entry: str) -> tuple[str, ...]:
    """The strings deny patterns are matched against: the entry as written, and without the
    characters an outbound route may ignore (*, + and any # but the final one)."""
    body = entry[:-1] if entry.endswith("#") else entry
    stripped = re.sub(r"[*+#]", "", body) + "#"
    written = body + "#"
    return (written,) if stripped == written else (written, stripped)


# -- file modes -----------------------------------------------------------------------------

_SYMBOLIC = re.compile(r"[ugoa]*[-+=][rwxXstugo]*(,[ugoa]*[-+=][rwxXstugo]*)*\Z")


def mode_problem(value, pattern: str) -> str | None:
    """Why followme_file_mode is refused, or None. pattern is the schema's, for a mode as a string."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"must be an octal mode as a quoted string such as '0640', not {_python_type(type(value).__name__)}"
    if isinstance(value, int):
        if not 0 <= value <= 0o7777:
            return (f"is no file mode: an unquoted number in YAML is taken as a number ({value} is octal "
                    f"{value:o}); write the mode as a quoted octal string such as '0640'")
        text, note = f"{value:03o}" if value <= 0o777 else f"{value:04o}", (
            f" (an unquoted number in YAML is taken as a number: {value} is octal {value:03o}; "
            "0640 written unquoted is 416 = mode 0640, but 640 is decimal = mode 1200. Quote the mode: '0640')")
    else:
        if _SYMBOLIC.match(value):
            return ("symbolic modes are not supported (they change a file's current mode, and the file is new): "
                    "write the octal mode as a quoted string such as '0640'")
        if not re.fullmatch(r"0?[0-7]{3}|[0-7]{4}", value):
            return ("is no octal file mode: write it as a quoted string of 3 octal digits after an optional 0, "
                    "e.g. '0640'")
        text, note = value, ""
    bits = int(text, 8)
    if bits & 0o7000:
        return f"mode {bits:04o} has a setuid, setgid or sticky bit{note}"
    if bits & 0o022:
        return (f"mode {bits:04o} lets group or other write the file, and whoever can write the dialplan "
                f"decides what the PBX dials{note}")
    if not re.search(pattern, text):
        return f"mode {bits:04o} is not accepted{note}"
    return None


# -- the checker ----------------------------------------------------------------------------

def _is_integer(_checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(_checker, instance) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool)


def _full_pattern(validator, pattern, instance, schema):
    """`pattern`, with `$` meaning the very end: Python's re lets "2001\\n" match ^[0-9]+$."""
    if not validator.is_type(instance, "string"):
        return
    match = re.search(pattern, instance)
    if match is None or (pattern.endswith("$") and match.end() != len(instance)):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_validator():
    """Draft 7 with strict types ("10" is no integer, 7.0 is no integer, true is no number) and
    whole-string patterns."""
    return jsonschema.validators.extend(
        Draft7Validator,
        validators={"pattern": _full_pattern},
        type_checker=Draft7Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number}),
    )


def field_defaults(schema: Mapping) -> dict[str, Any]:
    """The schema's default of every declaration field that has one."""
    return {name: spec["default"] for name, spec in schema["definitions"]["fields"]["properties"].items()
            if "default" in spec}


def completed(extension: str, declaration: Mapping, defaults: Mapping, schema_defaults: Mapping) -> dict:
    """A declaration with followme_defaults merged under it, then the schema's defaults."""
    merged = {**schema_defaults, **{k: v for k, v in defaults.items() if k != "list"}, **declaration}
    merged.setdefault("no_answer", {"voicemail": extension})
    return merged


def suspicious(name: str, known: Iterable[str]) -> bool:
    """Whether a variable name looks meant for this role: it starts with followme, or is close to a known name."""
    low = name.lower()
    if low.startswith(("followme", "follow_me")):
        return True
    if not 6 <= len(low) <= 40 or not ("fol" in low or "low" in low):
        return False
    return bool(difflib.get_close_matches(low, list(known), n=1, cutoff=0.9))


class Checker:
    """Validates hosts' variables against one schema."""

    def __init__(self, schema: Mapping):
        self.schema = schema
        strict = _strict_validator()
        strict.check_schema(schema)
        self._validator = strict(schema)
        # A compiled validator of one declaration: the fast path for the common, valid case.
        # Whatever it lets through must also satisfy StrictValidator; what it rejects gets
        # jsonschema's detailed errors. It is as lenient as draft-07 on 7.0 as an integer,
        # so values with floats always take the detailed path (no field accepts a float).
        self._fast = fastjsonschema.compile({"$ref": "#/definitions/declaration",
                                             "definitions": schema["definitions"]}, use_default=False)
        self._extension = re.compile(schema["definitions"]["extension"]["pattern"].rstrip("$") + r"\Z")
        self._entry = re.compile(schema["definitions"]["entry"]["pattern"].rstrip("$") + r"\Z")
        self._number = re.compile(r"\+?[0-9*#]{1,40}\Z")
        self._field_defaults = field_defaults(schema)
        self.variables = tuple(schema["properties"])
        self.settings_defaults = {name: schema["properties"][name]["default"] for name in self.variables
                                  if name not in LAYERS + ("followme_defaults",) + POLICY_VARIABLES}

    def _valid_declaration(self, extension, declaration) -> bool:
        if not (isinstance(extension, str) and self._extension.match(extension)) or _has_float(declaration):
            return False
        try:
            self._fast(declaration)
        except Exception:  # noqa: BLE001 (JsonSchemaException, or a TypeError on odd types: the detailed path says)
            return False
        return True

    # -- one host -----------------------------------------------------------------------
    def check_host(self, host: str, variables: Mapping[str, Any]) -> tuple[dict[str, dict], list[DeclarationError]]:
        """Return the host's complete declarations (enabled or not) and every error found."""
        result = self.check(host, variables)
        return result.declarations, result.errors

    def check(self, host: str, variables: Mapping[str, Any], *, known_names: Iterable[str] = (),
              problems: Iterable[DeclarationError] = (), plain: bool = False) -> Result:
        """Check one host's variables: the role's, and any other whose name looks meant for the role.

        known_names: more variable names that belong to the role (e.g. from its argument_specs);
        problems: errors already found while reading the variables (e.g. template errors), each
        with its location: other errors at or under that location are left out;
        plain: the variables are already bounded plain copies (bounded_plain), not to be walked again.
        """
        known = set(self.variables) | set(known_names)
        problems = list(problems)
        errors: list[DeclarationError] = []
        for name in sorted(str(name) for name in variables if name not in known):
            if suspicious(name, known):
                close = difflib.get_close_matches(name.lower(), sorted(self.variables), n=1, cutoff=0.75)
                accepted = f"did you mean {close[0]!r}?" if close else "accepted: " + ", ".join(self.variables)
                errors.append(self.problem(
                    host, (name,), f"unknown variable {name!r} (names starting with followme belong to the role); "
                    + accepted, variables[name]))
        budget = [MAX_NODES]
        taken = {}
        for name in self.variables:
            if name in variables and plain:
                taken[name] = variables[name]
            elif name in variables:
                taken[name], walk = bounded_plain(variables[name], budget=budget, path=(name,))
                problems += [self.problem(host, location, message, ()) for location, message in walk]
        errors += problems
        variables = taken
        if not any(layer in variables for layer in LAYERS):
            errors.append(DeclarationError(
                host, "", "followme", None,
                "the inventory names this host as a PBX (group pbx) but gives it no follow-me variables at all. "
                "Accepted: followme (and followme_host) in its group_vars or host_vars; followme: {} to manage "
                "an empty follow-me", location=("followme",)))
        rest = {name: value for name, value in variables.items()
                if name != "followme_file_mode" and (name not in LAYERS or not isinstance(value, Mapping))}
        for error in self._validator.iter_errors(rest):
            errors += self._errors(host, error)
        for layer in LAYERS:
            if isinstance(variables.get(layer), Mapping):
                for extension, declaration in variables[layer].items():
                    if not self._valid_declaration(extension, declaration):
                        for error in self._validator.iter_errors({layer: {extension: declaration}}):
                            errors += self._errors(host, error)
        if "followme_file_mode" in variables:
            spec = self.schema["properties"]["followme_file_mode"]
            problem = mode_problem(variables["followme_file_mode"], spec["pattern"])
            if problem:
                errors.append(DeclarationError(host, "", "followme_file_mode", variables["followme_file_mode"],
                                               f"{problem}. Accepted: {spec['description']}",
                                               location=("followme_file_mode",)))
        settings = {name: variables.get(name, copy.deepcopy(default))
                    for name, default in self.settings_defaults.items()}
        bad = {error.location[0] for error in errors if error.location}
        good_settings = {name: value if name not in bad else self.settings_defaults[name]
                         for name, value in settings.items()}
        followme = {}
        for layer in LAYERS:
            value = variables.get(layer, {})
            if not isinstance(value, Mapping):
                followme = None
                break
            followme.update(value)
        policy = {name: variables.get(name, copy.deepcopy(self.schema["properties"][name]["default"]))
                  for name in POLICY_VARIABLES}
        allow, deny = self._compile(host, policy, errors)

        defaults = variables.get("followme_defaults", {})
        warnings: list[DeclarationError] = []
        if not isinstance(followme, Mapping) or not isinstance(defaults, Mapping):
            return Result({}, _unique(errors, problems), warnings, settings)
        complete: dict[str, dict] = {}
        for extension, declaration in followme.items():
            if isinstance(extension, str) and isinstance(declaration, Mapping) and "list" in declaration:
                complete[extension] = completed(extension, declaration, defaults, self._field_defaults)
        # Cross-checks read only values the schema has vouched for: a field with an error of its
        # own (or in followme_defaults) is left out of them, the other fields are still checked.
        tainted: dict[str, set] = {extension: set() for extension in complete}
        for error in errors:
            field_name = re.split(r"[.\[]", error.path)[0]
            if error.extension in tainted:
                tainted[error.extension].add(field_name)
            elif error.path.startswith("followme_defaults."):
                for fields in tainted.values():
                    fields.add(re.split(r"[.\[]", error.path)[1])
        cross = _CrossCheck(self, host, complete, tainted, layers=layered(variables), raw=followme,
                            known=policy["followme_known_extensions"], allow=allow, deny=deny,
                            settings=good_settings)
        errors.extend(cross.errors())
        errors.extend(_feature_checks(host, complete, tainted))
        warnings.extend(cross.warnings())
        return Result(complete, _unique(errors, problems), _unique(warnings), settings)

    def problem(self, host: str, location: tuple, message: str, value: Any = None) -> DeclarationError:
        """An error found while reading a host's variables (e.g. a template error) at a location."""
        shown = None if isinstance(value, (str, int, float, bool)) or value is None else "(...)"
        return DeclarationError(host, *self.where(location), value, message, location=tuple(location),
                                written=shown)

    def where(self, location: tuple) -> tuple[str, str]:
        """(extension, field path text) of a location in the host's variables."""
        variable, *path = location
        if variable in LAYERS and path:
            return str(path[0]), _path_text(path[1:]) or "(declaration)"
        return "", _path_text([variable, *path])

    # -- jsonschema errors as sentences -------------------------------------------------
    def _errors(self, host: str, error: ValidationError) -> list[DeclarationError]:
        error = _narrow(error)
        location = tuple(error.absolute_path)
        path = list(location)
        variable = path.pop(0) if path else ""
        extension = ""
        if variable in LAYERS and path:
            extension = str(path.pop(0))
        value = error.instance
        message = self._reason(error)
        if "propertyNames" in error.absolute_schema_path:
            # The extension key itself is wrong.
            extension, value, path = str(error.instance), error.instance, ["(extension key)"]
            message = "an extension key must be 1 to 15 digits, written as a quoted string"
            location = (variable, error.instance)
        elif error.validator == "additionalProperties":
            # Point at each unknown key itself.
            accepted = sorted(error.schema.get("properties", {}))
            found = []
            for key in sorted(set(error.instance) - set(accepted), key=str):
                close = difflib.get_close_matches(str(key), accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else "."
                found.append(self._make(host, variable, extension, [*path, key], error.instance[key],
                                        f"unknown field {key!r}{hint} Accepted: {', '.join(accepted)}",
                                        (*location, key)))
            return found
        return [self._make(host, variable, extension, path, value, message, location)]

    @staticmethod
    def _make(host, variable, extension, path, value, message, location) -> DeclarationError:  # noqa: PLR0917
        if extension:
            text = _path_text(path) or "(declaration)"
        else:
            text = _path_text([variable, *path]) if variable else "(host variables)"
        return DeclarationError(host, extension, text, value, message, location=tuple(location))

    @staticmethod
    def _reason(error: ValidationError) -> str:
        kind = error.validator
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        accepted = schema.get("description", "")
        if kind == "type":
            wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            names = {"integer": "an integer", "string": "a string", "boolean": "a boolean (true or false)",
                     "object": "a mapping", "array": "a list", "null": "null", "number": "a number"}
            got = type(error.instance).__name__
            text = f"must be {' or '.join(names.get(w, w) for w in wanted)}, not {_python_type(got)}"
        elif kind == "minimum":
            text = f"must be at least {error.validator_value}"
        elif kind == "maximum":
            text = f"must be at most {error.validator_value}"
        elif kind == "enum":
            choices = [str(choice) for choice in error.validator_value]
            lowered = {choice.lower(): choice for choice in choices}
            close = difflib.get_close_matches(str(error.instance).lower(), list(lowered), n=1, cutoff=0.6)
            hint = f"; did you mean {lowered[close[0]]!r}?" if close else ""
            text = f"must be one of: {', '.join(choices)}{hint}"
        elif kind == "not":
            return accepted or "not accepted"
        elif kind == "required":
            missing = [name for name in error.validator_value if name not in error.instance]
            return f"missing required field {', '.join(map(repr, missing))}"
        elif kind == "uniqueItems":
            seen, dup = set(), None
            for item in error.instance:
                key = _show(item)
                if key in seen:
                    dup = item
                    break
                seen.add(key)
            text = f"entries must be unique ({_show(dup)} appears twice)"
        elif kind == "minItems":
            text = f"must have at least {error.validator_value} entries"
        elif kind == "maxItems":
            text = f"must have at most {error.validator_value} entries"
        elif kind == "maxLength":
            text = f"must be at most {error.validator_value} characters long"
        elif kind == "minLength":
            text = f"must be at least {error.validator_value} characters long"
        elif kind in ("pattern", "oneOf", "anyOf", "allOf"):
            text = "not accepted"
        else:
            text = error.message
        if accepted and kind not in ("enum",):
            text = f"{text}. Accepted: {accepted}"
        return text

    # -- policy ---------------------------------------------------------------------------
    def _compile(self, host: str, policy: Mapping, errors: list) -> tuple[list, list]:
        compiled = {}
        longest = self.schema["definitions"]["regex"].get("maxLength", 200)
        for name in ("followme_external_allow", "followme_external_deny"):
            compiled[name] = []
            patterns = policy.get(name)
            if not isinstance(patterns, list):
                continue
            for index, pattern in enumerate(patterns):
                if not isinstance(pattern, str) or not 0 < len(pattern) <= longest:
                    continue  # an error of its own
                problem = regex_problem(pattern)
                if problem:
                    errors.append(DeclarationError(host, "", f"{name}[{index}]", pattern, problem,
                                                   location=(name, index)))
                else:
                    compiled[name].append(re.compile(pattern))
        return compiled["followme_external_allow"], compiled["followme_external_deny"]


class _CrossCheck:
    """What a schema cannot say: known extensions, the toll-fraud policy on every way a declaration
    can make Asterisk dial, the role's own contexts, no_answer loops, entries that look external."""

    def __init__(self, checker: Checker, host, declarations, tainted, *, layers, raw, known, allow, deny,
                 settings):
        self.checker, self.host, self.declarations, self.tainted = checker, host, declarations, tainted
        self.layers, self.raw, self.allow, self.deny, self.settings = layers, raw, allow, deny, settings
        self.known = {item for item in known if isinstance(item, str)} if isinstance(known, list) else None
        self.context = settings["followme_context"]
        self.extension_context = settings["followme_extension_context"]
        self.lengths = {len(extension) for extension in declarations}

    def _error(self, extension, path, value, message, location) -> DeclarationError:
        return DeclarationError(self.host, extension, path, value, message, location=location)

    def _internal(self, number: str) -> bool:
        """A number that names one of this site's extensions, not something to dial out: one of
        followme_known_extensions when set, else a declared extension or digits as long as one."""
        if self.known is not None:
            return number in self.known
        return number in self.declarations or (number.isdigit() and len(number) in self.lengths)

    def _policy(self, extension, path, number, location, *, entry: bool) -> Iterable[DeclarationError]:
        """The toll-fraud policy on one thing Asterisk may dial: an external entry, or a no_answer/goto target."""
        form = number if entry else (number if number.endswith("#") else number + "#")
        why = "" if entry else (
            "; not in followme_known_extensions, so it may be dialed out; matched as " + form
            if self.known is not None else
            "; neither a declared extension nor as long as one, so it may be dialed out; matched as " + form
            + "; an internal extension is listed in followme_known_extensions")
        if self.allow and (entry or self.checker._number.match(number)) \
                and not any(pattern.search(form) for pattern in self.allow):
            yield self._error(extension, path, number,
                              ("external number " if entry else "") + "matches none of followme_external_allow: "
                              + ", ".join(repr(p.pattern) for p in self.allow) + (f" ({why[2:]})" if why else ""),
                              location)
        for candidate in deny_forms(form):
            blocking = next((pattern for pattern in self.deny if pattern.search(candidate)), None)
            if blocking:
                seen = "" if candidate == form else (
                    f"; matched as {candidate}: *, + and inner # removed, as an outbound route may ignore them")
                yield self._error(extension, path, number,
                                  ("external number " if entry else "")
                                  + f"blocked by followme_external_deny pattern {blocking.pattern!r} "
                                  f"(toll-fraud policy{seen}{why})", location)
                return

    def _own_context(self, context: str) -> bool:
        own = self.context.lower()
        return context.lower() == own or context.lower().startswith(own + "-")

    def errors(self) -> Iterable[DeclarationError]:
        for name in ("followme_outbound_context", "followme_extension_context"):
            value = self.settings[name]
            if self._own_context(value):
                yield DeclarationError(self.host, "", name, value,
                                       f"is one of the role's own contexts ({self.context} and {self.context}-*): "
                                       "calls would loop inside follow-me. Accepted: the site's own context",
                                       location=(name,))
        for extension, declaration in sorted(self.declarations.items()):
            layer = self.layers.get(extension, "followme")
            if self.known is not None and extension not in self.known:
                yield self._error(extension, "(extension key)", extension, "not in followme_known_extensions",
                                  (layer, extension))
            entries = _entry_numbers(declaration["list"])
            for index, entry in enumerate(entries):
                if not (isinstance(entry, str) and self.checker._entry.match(entry)):
                    continue  # already an error of its own
                path, location = f"list[{index}]", (layer, extension, "list", index)
                if entry.endswith("#"):
                    yield from self._policy(extension, path, entry, location, entry=True)
                elif self.known is not None and entry not in self.known:
                    yield self._error(extension, path, entry, "not in followme_known_extensions", location)
            if "no_answer" in self.tainted[extension]:
                continue
            target = declaration["no_answer"]
            where = (layer, extension, "no_answer") if "no_answer" in self.raw.get(extension, {}) \
                else ("followme_defaults", "no_answer")
            if isinstance(target, Mapping) and "extension" in target:
                number, location = target["extension"], (*where, "extension")
                if self.known is not None and number not in self.known:
                    yield self._error(extension, "no_answer.extension", number,
                                      "not in followme_known_extensions", location)
                elif not self._internal(number):
                    yield from self._policy(extension, "no_answer.extension", number, location, entry=False)
            elif isinstance(target, Mapping) and isinstance(target.get("goto"), Mapping):
                goto = target["goto"]
                context, number = goto.get("context"), goto.get("extension")
                if isinstance(context, str) and self._own_context(context):
                    yield self._error(extension, "no_answer.goto.context", context,
                                      f"the role's own contexts ({self.context} and {self.context}-*) are no "
                                      "no_answer destination: they ring follow-me or dial a leg directly, past the "
                                      "policy. Accepted: a context of the site's dialplan; to hand the call to "
                                      "extension N, no_answer: {extension: N}", (*where, "goto", "context"))
                elif isinstance(number, str) and not self._internal(number):
                    yield from self._policy(extension, "no_answer.goto.extension", number,
                                            (*where, "goto", "extension"), entry=False)
        yield from self._loops()

    def _target(self, declaration) -> tuple[str, str] | None:
        """(extension, field path) a declaration's no_answer hands the call to, when that is a call to an extension."""
        target = declaration["no_answer"]
        if not isinstance(target, Mapping):
            return None
        if "extension" in target and isinstance(target["extension"], str):
            return target["extension"], "no_answer.extension"
        goto = target.get("goto")
        if isinstance(goto, Mapping) and isinstance(goto.get("context"), str) \
                and isinstance(goto.get("extension"), str) \
                and goto["context"].lower() == self.extension_context.lower():
            return goto["extension"], "no_answer.goto.extension"
        return None

    def _loops(self) -> Iterable[DeclarationError]:
        """no_answer chains of enabled declarations that come back to where they started: through
        no_answer.extension, or a goto into followme_extension_context (a call to that extension)."""
        follows: dict[str, tuple[str, str]] = {}
        for extension, declaration in self.declarations.items():
            if self.tainted[extension] & {"no_answer", "enabled", "(declaration)"}:
                continue
            target = self._target(declaration)
            if declaration["enabled"] is True and target:
                follows[extension] = target
        reported: set[str] = set()
        for start in sorted(follows):
            chain, current = [start], follows[start][0]
            while current in follows and current not in chain:
                chain.append(current)
                current = follows[current][0]
            if current not in chain:
                continue
            cycle = chain[chain.index(current):]
            if reported & set(cycle):
                continue
            reported.update(cycle)
            first = min(cycle)
            rotated = cycle[cycle.index(first):] + cycle[:cycle.index(first)]
            number, path = follows[first]
            layer = self.layers.get(first, "followme")
            yield self._error(first, path, number,
                              "no_answer chain loops back: " + " -> ".join(rotated + [first])
                              + ". Accepted: a chain that ends (voicemail, hangup, goto elsewhere, or an extension "
                              "without an enabled follow-me)", (layer, first, *path.split(".")))

    def warnings(self) -> Iterable[DeclarationError]:
        """Internal entries that do not look like one of this site's extensions (followme_known_extensions unset)."""
        if self.known is not None or not self.declarations:
            return
        longest = max(len(extension) for extension in self.declarations)
        for extension, declaration in sorted(self.declarations.items()):
            entries = _entry_numbers(declaration["list"])
            for index, entry in enumerate(entries):
                if not isinstance(entry, str) or len(entry) <= longest or entry.endswith("#") \
                        or entry in self.declarations or not self.checker._entry.match(entry):
                    continue
                external = {item[0] for item in entries if isinstance(item, str) and item.endswith("#")
                            and item[0] != "+"}
                prefix = sorted(external)[0] if len(external) == 1 else "9"
                prefix = "" if prefix == entry[0] else prefix
                device = self.settings["followme_device"].replace("{extension}", entry)
                yield self._error(
                    extension, f"list[{index}]", entry,
                    f"does not look like one of this site's extensions (longer than every declared one, "
                    f"{longest} digits): it rings device {device}, which probably does not exist. An outside number "
                    f"is written <outbound prefix><number>#, likely {prefix}{entry}#; an extension, listed in "
                    "followme_known_extensions, silences this warning",
                    (self.layers.get(extension, "followme"), extension, "list", index))


def _has_float(value) -> bool:
    """Whether a plain value (dicts and lists, as bounded_plain makes them) holds a float."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def _narrow(error: ValidationError) -> ValidationError:
    """For a oneOf over mappings (no_answer), the error inside the one branch the value meant."""
    while error.validator == "oneOf" and isinstance(error.instance, Mapping) and error.context:
        branches: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [subs for index, subs in branches.items()
                 if not any(sub.validator in ("type", "required") and not sub.relative_path for sub in subs)]
        if len(meant) != 1:
            break
        error = meant[0][0]
    return error


def _unique(errors: Iterable[DeclarationError], problems: Iterable[DeclarationError] = ()) -> list[DeclarationError]:
    """Errors sorted by host, extension and field, each once; none at or under a problem's location."""
    problems = list(problems)
    covered = [problem.location for problem in problems if problem.location]
    seen = {}
    for error in errors:
        if covered and error.location and error not in problems \
                and any(error.location[:len(place)] == place for place in covered):
            continue
        seen.setdefault((error.host, error.extension, error.path, str(error)), error)
    return [seen[key] for key in sorted(seen)]


def _path_text(path: list) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else (
            f".{part}" if text else str(part))
    return text


def _python_type(name: str) -> str:
    return {"str": "a string", "int": "an integer", "float": "a decimal number", "bool": "a boolean",
            "dict": "a mapping", "list": "a list", "NoneType": "null"}.get(name, name)


def check_hosts(schema: Mapping, hosts: Mapping[str, Mapping[str, Any]]):
    """Check every host: ({host: {extension: complete declaration}}, [every error of every host])."""
    checker = Checker(schema)
    declarations, errors = {}, []
    for host in sorted(hosts):
        declarations[host], host_errors = checker.check_host(host, hosts[host])
        errors.extend(host_errors)
    return declarations, errors


def load_schema(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _entry_numbers(entries) -> list:
    """The numbers of a list's entries: a {number, delay, ring_time} entry counts as its number, so the
    policy and known-extension checks see every entry whatever its form."""
    if not isinstance(entries, list):
        return []
    return [entry.get("number") if isinstance(entry, Mapping) else entry for entry in entries]


def _feature_checks(host: str, declarations: Mapping[str, dict], tainted) -> Iterable[DeclarationError]:
    """Cross-checks of the issue-9 fields (each in a function of its own)."""
    for extension, declaration in sorted(declarations.items()):
        yield from _external_cid_check(host, extension, declaration, tainted[extension])
        yield from _timed_entries_check(host, extension, declaration, tainted[extension])
        yield from _schedule_check(host, extension, declaration, tainted[extension])


def _schedule_check(host, extension, declaration, tainted) -> Iterable[DeclarationError]:
    """A schedule's timezone must be one the controller's time-zone database knows (the PBX reads the same
    IANA names); a range whose days cannot occur in its months (e.g. days 30-31 in feb) never matches."""
    schedule = declaration.get("schedule")
    if "schedule" in tainted or not isinstance(schedule, Mapping):
        return
    zone = schedule.get("timezone")
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            yield DeclarationError(host, extension, "schedule.timezone", zone,
                                   "unknown time zone. Accepted: an IANA time zone name such as Europe/Berlin")
    for index, item in enumerate(schedule["ranges"]):
        days, months = item.get("days", "*"), item.get("months", "*")
        if days == "*" or months == "*" or "-" in months:
            continue
        first, _dash, last = days.partition("-")
        first, last = int(first), int(last or first)
        if first > _LONGEST_MONTH[months] and first <= last:
            yield DeclarationError(host, extension, f"schedule.ranges[{index}].days", days,
                                   f"{months} has no day {first}: this range never matches. Accepted: days "
                                   f"that {months} has (1 to {_LONGEST_MONTH[months]})")


_LONGEST_MONTH = {"jan": 31, "feb": 29, "mar": 31, "apr": 30, "may": 31, "jun": 30, "jul": 31, "aug": 31,
                  "sep": 30, "oct": 31, "nov": 30, "dec": 31}


def _timed_entries_check(host, extension, declaration, tainted) -> Iterable[DeclarationError]:
    """An entry given twice (once plain, once with timing) is an error; in ringall, ringallv2 and memoryhunt
    strategies an entry's delay must be shorter than ring_time (it would join after its step ended)."""
    if tainted & {"list", "strategy", "ring_time", "(declaration)"}:
        return
    seen: dict = {}
    for index, entry in enumerate(declaration["list"]):
        number = entry["number"] if isinstance(entry, Mapping) else entry
        if number in seen:
            yield DeclarationError(host, extension, f"list[{index}]", entry,
                                   f"entry {number} appears twice (also list[{seen[number]}]). Accepted: "
                                   "each number once, plain or with its own timing")
        seen.setdefault(number, index)
        delay = entry.get("delay", 0) if isinstance(entry, Mapping) else 0
        joined = declaration["strategy"].split("-")[0] in ("ringall", "ringallv2", "memoryhunt")
        if joined and delay >= declaration["ring_time"]:
            yield DeclarationError(host, extension, f"list[{index}].delay", delay,
                                   f"with strategy {declaration['strategy']} the entry would join after its "
                                   f"step of ring_time {declaration['ring_time']} s ended. Accepted: a delay "
                                   "shorter than ring_time")


def _external_cid_check(host, extension, declaration, tainted) -> Iterable[DeclarationError]:
    """external_cid_mode fixed, outside_fixed and force_dialed need external_cid_number."""
    if tainted & {"external_cid_mode", "external_cid_number", "(declaration)"}:
        return
    mode = declaration.get("external_cid_mode")
    if mode in ("fixed", "outside_fixed", "force_dialed") and declaration.get("external_cid_number") is None:
        yield DeclarationError(host, extension, "external_cid_number", None,
                               f"external_cid_mode {mode} sends this number, but none is set (here or in "
                               "followme_defaults). Accepted: 1 to 20 digits, one optional leading +")
