# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: validate the follow-me variables of a PBX host, on the controller.

It never connects to the host: it reads the host's variables from the inventory (the declarations,
the policy, every other followme_* role variable, and any variable whose name looks meant for the
role), checks them against the role's JSON Schema and the cross-checks, and returns every error,
or prints each extension's call plan (with -v). Each error names the file and line the value came
from where ansible-core kept it (2.19: every value; 2.17/2.18: mappings, lists and strings).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import sys

import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.followme.asterisk.plugins.module_utils import plan as plan_module
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plans
from ansible_collections.followme.asterisk.plugins.plugin_utils import cache
from ansible_collections.followme.asterisk.plugins.plugin_utils import declarations as declarations_module
from ansible_collections.followme.asterisk.plugins.plugin_utils.action import require_controller_libraries
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    Checker,
    Result,
    layered,
    load_schema,
    suspicious,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import (
    duplicate_keys,
    locate,
    origin_of,
    origin_text,
    read_templated,
    written,
)

# Documented in plugins/modules/followme_validate.py (ansible-doc followme.asterisk.followme_validate).

#: Warnings shown per host at most (the rest are counted).
MAX_WARNINGS = 20


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("schema",))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        require_controller_libraries()
        schema_path = self._task.args.get("schema") or self._find_needle("files", "followme.schema.json")
        try:
            schema = load_schema(schema_path)
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail(f"cannot read the followme schema {schema_path}: {exc}") from exc

        host = str(task_vars.get("inventory_hostname", "?"))
        checker = Checker(schema)
        known = set(checker.variables) | self._argument_spec_names()
        names = [name for name in task_vars if isinstance(name, str)
                 and (name in known or suspicious(name, known))]
        variables, found = read_templated(task_vars, names, self._templar.template)
        problems = [checker.problem(host, location, message, locate(task_vars, location)[0])
                    for location, message in found]
        verbose = Display().verbosity >= 1
        # The same variables found valid before, by the same code and schema (a rerun): not checked again.
        key = None if problems or verbose else self._cache_key(schema, host, variables, known)
        valid = cache.read("valid", key)
        if not (isinstance(valid, list) and len(valid) == 2):
            valid = None
            checked = checker.check(host, variables, known_names=known, problems=problems, plain=True)
        else:
            checked = Result(declarations={}, errors=[])
        duplicates = self._duplicates(host, checker, task_vars, names)
        if duplicates:
            checked.errors = sorted(checked.errors + duplicates, key=lambda e: (e.host, e.extension, e.path, str(e)))
        result["changed"] = False
        lines: dict = {}
        root = os.getcwd()
        hidden = self._group_layer_hidden(host, task_vars, root)
        if hidden:
            Display().warning(hidden)
        if checked.warnings:
            display = Display()
            for warning in checked.warnings[:MAX_WARNINGS]:
                display.warning(str(self._placed(warning, task_vars, lines, root)))
            if len(checked.warnings) > MAX_WARNINGS:
                display.warning(f"{host}: {len(checked.warnings) - MAX_WARNINGS} more follow-me warning(s)")
        if checked.errors:
            # Listed once, under errors: ansible-core 2.19 repeats msg in its own error line.
            result["failed"] = True
            result["errors"] = [str(self._placed(error, task_vars, lines, root)) for error in checked.errors]
            result["msg"] = (f"{len(checked.errors)} follow-me error(s) on {host}, listed under errors; "
                             "nothing is changed on any host")
            return result
        declarations = checked.declarations
        if valid is None:
            valid = [len(declarations), sum(1 for declaration in declarations.values() if declaration["enabled"])]
            if not checked.warnings:
                cache.write("valid", key, valid)
        if verbose:
            # Each plan in words, and the layer (and file:line, where Ansible kept it) it was declared in.
            display = Display()
            layers = layered(variables)
            for extension, plan in build_plans(declarations).items():
                layer = layers.get(extension, "followme")
                origin = locate(task_vars, (layer, extension))[1]
                where = f", {origin_text(origin, root)}" if origin else ""
                display.display(f"{host}: {plan.describe()} [{layer}{where}]")
        result["msg"] = f"{valid[0]} follow-me declaration(s) valid on {host}, {valid[1]} enabled"
        return result

    @staticmethod
    def _cache_key(schema, host, variables, known) -> str | None:
        """What a check's outcome depends on: the checking code, the schema, the host, its variables."""
        try:
            data = json.dumps([schema, host, variables, sorted(known)], sort_keys=True, allow_nan=False)
            libraries = [importlib.metadata.version(name) for name in ("jsonschema", "fastjsonschema")]
        except (TypeError, ValueError, importlib.metadata.PackageNotFoundError):
            return None  # keys of mixed types (2001 and "2001"), a NaN: checked every time
        return cache.digest([declarations_module, plan_module, sys.modules[__name__]], data, *libraries)

    @staticmethod
    def _group_layer_hidden(host, task_vars, root) -> str | None:
        """A followme set in host_vars replaces the group's whole mapping (Ansible's precedence): say so."""
        origin = origin_of(task_vars.get("followme")) if "followme" in task_vars else None
        if not origin or "/host_vars/" not in origin[0].replace("\\", "/"):
            return None
        return (f"{host}: followme is set in {origin_text(origin, root)}, a host_vars file: by Ansible's precedence "
                "it replaces the group's followme whole, so no group declaration reaches this host. Put this "
                "host's own declarations in followme_host, which is merged over the group's by extension")

    def _argument_spec_names(self) -> set[str]:
        """Option names of the role's argument_specs (role variables added there are known too)."""
        role = getattr(self._task, "_role", None)
        path = getattr(role, "_role_path", None)
        if not path:
            return set()
        for name in ("argument_specs.yml", "argument_specs.yaml", "main.yml"):
            try:
                with open(os.path.join(path, "meta", name), encoding="utf-8") as handle:
                    specs = yaml.safe_load(handle) or {}
            except (OSError, yaml.YAMLError):
                continue
            options = ((specs.get("argument_specs") or {}).get("main") or {}).get("options") or {}
            if options:
                return {str(option) for option in options}
        return set()

    @staticmethod
    def _placed(error, task_vars, lines, root):
        """The error with the file:line:column its value came from, and the value as written."""
        if not error.location or error.origin:
            return error
        value, origin = locate(task_vars, error.location)
        if not origin:
            return error
        changes = {"origin": origin_text(origin, root)}
        if error.written is None and value is not None and value == error.value:
            shown = written(value, origin, lines)
            if shown is not None:
                changes["written"] = shown
        return dataclasses.replace(error, **changes)

    @staticmethod
    def _duplicates(host, checker, task_vars, names):
        """Keys written twice in the files the host's variables came from (YAML keeps only the last one)."""
        files: dict[str, dict] = {}
        for name in names:
            origin = origin_of(task_vars[name])
            if origin and origin[1] and origin[2]:
                files.setdefault(origin[0], {})[(origin[1], origin[2])] = name
            elif origin:
                files.setdefault(origin[0], {})
        problems = []
        root = os.getcwd()
        for path, anchors in sorted(files.items()):
            if not os.path.isfile(path):
                continue
            for location, key, first, line, column in duplicate_keys(path, anchors, names):
                message = (f"written twice in one mapping (lines {first} and {line}): YAML keeps the last and drops "
                           "the first without a word. Accepted: each key once; merge the two")
                error = checker.problem(host, location, message, locate(task_vars, location)[0])
                if error.path == "(declaration)":
                    error = dataclasses.replace(error, path="(extension key)", value=key, written=None)
                problems.append(dataclasses.replace(error, origin=origin_text((path, line, column), root)))
        return problems
