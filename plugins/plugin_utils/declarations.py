"""Validate the follow-me declarations of PBX hosts and complete them.

Runs on the controller only (it needs jsonschema). The JSON Schema in
schemas/followme.schema.json is the one source of truth for the format: field
rules and defaults come from it; this module adds what a schema cannot say (the
cross-checks of ../shared/SPEC.md) and turns every problem into a message that
names host, extension, field path and offending value.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

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
        name = (LIBRARY_IMPORT_ERROR.name or "").split(".")[0]
        package = PIP_PACKAGES.get(name, name or str(LIBRARY_IMPORT_ERROR))
        raise MissingLibrary(f"followme needs the Python library {name or package} on the controller "
                             f"({python}): install it with `{python} -m pip install '{package}'`")

#: Role variables the schema covers, besides followme and followme_defaults.
POLICY_VARIABLES = ("followme_known_extensions", "followme_external_allow", "followme_external_deny")
#: Declaration layers, merged by extension in this order (a later layer's declaration wins).
LAYERS = ("followme", "followme_host")
VARIABLES = LAYERS + ("followme_defaults",) + POLICY_VARIABLES


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

    def __str__(self) -> str:
        where = f"extension {self.extension}: " if self.extension else ""
        return f"{self.host}: {where}{self.path} = {_show(self.value)}: {self.message}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    merged = {**schema_defaults, **defaults, **declaration}
    merged.setdefault("no_answer", {"voicemail": extension})
    return merged


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
        self._field_defaults = field_defaults(schema)

    def _valid_declaration(self, extension, declaration) -> bool:
        if not (isinstance(extension, str) and self._extension.match(extension)) or _has_float(declaration):
            return False
        try:
            self._fast(declaration)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    # -- one host -----------------------------------------------------------------------
    def check_host(self, host: str, variables: Mapping[str, Any]) -> tuple[dict[str, dict], list[DeclarationError]]:
        """Return the host's complete declarations (enabled or not) and every error found."""
        variables = {name: variables[name] for name in VARIABLES if name in variables}
        errors = []
        if not any(layer in variables for layer in LAYERS):
            errors.append(DeclarationError(
                host, "", "followme", None,
                "the inventory names this host as a PBX (group pbx) but gives it no follow-me variables at all. "
                "Accepted: followme (and followme_host) in its group_vars or host_vars; followme: {} to manage "
                "an empty follow-me"))
        rest = {name: value for name, value in variables.items()
                if name not in LAYERS or not isinstance(value, Mapping)}
        errors += [self._error(host, e) for e in self._validator.iter_errors(rest)]
        for layer in LAYERS:
            if isinstance(variables.get(layer), Mapping):
                for extension, declaration in variables[layer].items():
                    if not self._valid_declaration(extension, declaration):
                        errors.extend(self._error(host, e)
                                      for e in self._validator.iter_errors({layer: {extension: declaration}}))
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
        if not isinstance(followme, Mapping) or not isinstance(defaults, Mapping):
            return {}, _unique(errors)
        complete: dict[str, dict] = {}
        for extension, declaration in followme.items():
            if isinstance(extension, str) and isinstance(declaration, Mapping) and "list" in declaration:
                complete[extension] = completed(extension, declaration, defaults, self._field_defaults)
        # Cross-checks read only values the schema has vouched for: a field with an error of its
        # own (or in followme_defaults) is left out of them, the other fields are still checked.
        tainted: dict[str, set] = {extension: set() for extension in complete}
        for error in errors:
            field = re.split(r"[.\[]", error.path)[0]
            if error.extension in tainted:
                tainted[error.extension].add(field)
            elif error.path.startswith("followme_defaults."):
                for fields in tainted.values():
                    fields.add(re.split(r"[.\[]", error.path)[1])
        errors.extend(self._cross_check(host, complete, tainted, known=policy["followme_known_extensions"],
                                        allow=allow, deny=deny))
        errors.extend(_feature_checks(host, complete, tainted))
        return complete, _unique(errors)

    # -- jsonschema errors as sentences -------------------------------------------------
    def _error(self, host: str, error: ValidationError) -> DeclarationError:
        error = _narrow(error)
        path = list(error.absolute_path)
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
        elif error.validator == "additionalProperties":
            # Point at the unknown key itself.
            accepted = sorted(error.schema.get("properties", {}))
            key = sorted(set(error.instance) - set(accepted), key=str)[0]
            path.append(key)
            value = error.instance[key]
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            message = f"unknown field {key!r}{hint} Accepted: {', '.join(accepted)}"
        if extension:
            field = _path_text(path) or "(declaration)"
        else:
            field = _path_text([variable, *path]) if variable else "(host variables)"
        return DeclarationError(host, extension, field, value, message)

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
            text = f"must be one of: {', '.join(map(str, error.validator_value))}"
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
        elif kind in ("pattern", "oneOf", "anyOf", "allOf"):
            text = "not accepted"
        else:
            text = error.message
        if accepted and kind not in ("enum",):
            text = f"{text}. Accepted: {accepted}"
        return text

    # -- policy ---------------------------------------------------------------------------
    @staticmethod
    def _compile(host: str, policy: Mapping, errors: list) -> tuple[list, list]:
        compiled = {}
        for name in ("followme_external_allow", "followme_external_deny"):
            compiled[name] = []
            patterns = policy.get(name)
            if not isinstance(patterns, list):
                continue
            for index, pattern in enumerate(patterns):
                if not isinstance(pattern, str):
                    continue
                try:
                    compiled[name].append(re.compile(pattern))
                except re.error as exc:
                    errors.append(DeclarationError(host, "", f"{name}[{index}]", pattern,
                                                   f"not a valid regular expression ({exc})"))
        return compiled["followme_external_allow"], compiled["followme_external_deny"]

    def _cross_check(self, host, declarations, tainted, *, known, allow, deny) -> Iterable[DeclarationError]:
        known = {item for item in known if isinstance(item, str)} if isinstance(known, list) else None
        for extension, declaration in sorted(declarations.items()):
            if known is not None and extension not in known:
                yield DeclarationError(host, extension, "(extension key)", extension,
                                       "not in followme_known_extensions")
            entries = _entry_numbers(declaration["list"])
            for index, entry in enumerate(entries):
                if not (isinstance(entry, str) and self._entry.match(entry)):
                    continue  # already an error of its own
                field = f"list[{index}]"
                if entry.endswith("#"):
                    if allow and not any(p.search(entry) for p in allow):
                        yield DeclarationError(host, extension, field, entry,
                                               "external number matches none of followme_external_allow: "
                                               + ", ".join(repr(p.pattern) for p in allow))
                    blocking = next((pattern for pattern in deny if pattern.search(entry)), None)
                    if blocking:
                        yield DeclarationError(host, extension, field, entry,
                                               f"external number blocked by followme_external_deny "
                                               f"pattern {blocking.pattern!r} (toll-fraud policy)")
                elif known is not None and entry not in known:
                    yield DeclarationError(host, extension, field, entry, "not in followme_known_extensions")
            target = declaration["no_answer"]
            if "no_answer" not in tainted[extension] and isinstance(target, Mapping) and "extension" in target:
                if known is not None and target["extension"] not in known:
                    yield DeclarationError(host, extension, "no_answer.extension", target["extension"],
                                           "not in followme_known_extensions")
        yield from _loops(host, {extension: declaration for extension, declaration in declarations.items()
                                 if not tainted[extension] & {"no_answer", "enabled", "(declaration)"}})


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
        first, _, last = days.partition("-")
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


def _loops(host: str, declarations: Mapping[str, dict]) -> Iterable[DeclarationError]:
    """no_answer chains of enabled declarations that come back to where they started."""
    follows = {}
    for extension, declaration in declarations.items():
        target = declaration["no_answer"]
        if declaration["enabled"] and isinstance(target, Mapping) and "extension" in target:
            follows[extension] = target["extension"]
    reported: set[str] = set()
    for start in sorted(follows):
        chain, current = [start], follows[start]
        while current in follows and current not in chain:
            chain.append(current)
            current = follows[current]
        if current not in chain:
            continue
        cycle = chain[chain.index(current):]
        if reported & set(cycle):
            continue
        reported.update(cycle)
        first = min(cycle)
        rotated = cycle[cycle.index(first):] + cycle[:cycle.index(first)]
        yield DeclarationError(host, first, "no_answer.extension", follows[first],
                               "no_answer chain loops back: " + " -> ".join(rotated + [first])
                               + ". Accepted: a chain that ends (voicemail, hangup, goto, or an extension "
                               "without an enabled follow-me)")


def _has_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, Mapping):
        return any(_has_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_float(item) for item in value)
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


def _unique(errors: Iterable[DeclarationError]) -> list[DeclarationError]:
    """Errors sorted by host, extension and field, each once."""
    seen = {}
    for error in errors:
        seen.setdefault((error.host, error.extension, error.path, str(error)), error)
    return [seen[key] for key in sorted(seen)]


def _path_text(path: list) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
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
