# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: validate the follow-me declarations of a PBX host, on the controller.

It never connects to the host: it reads the host's variables from the inventory,
checks them against the role's JSON Schema and the cross-checks, and returns
every error, or prints each extension's call plan (with -v).
"""

from __future__ import annotations

import sys

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.followme.asterisk.plugins.module_utils.plan import build_plans
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    VARIABLES,
    Checker,
    MissingLibrary,
    load_schema,
    require_libraries,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import read_variables

# Documented in plugins/modules/followme_validate.py (ansible-doc followme.asterisk.followme_validate).


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("schema",))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        try:
            require_libraries(sys.executable)
        except MissingLibrary as exc:
            raise AnsibleActionFail(str(exc)) from None
        schema_path = self._task.args.get("schema") or self._find_needle("files", "followme.schema.json")
        try:
            schema = load_schema(schema_path)
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail(f"cannot read the followme schema {schema_path}: {exc}") from exc

        host = task_vars.get("inventory_hostname", "?")
        variables = read_variables(task_vars, VARIABLES, self._templar.template)
        declarations, errors = Checker(schema).check_host(host, variables)
        result["changed"] = False
        if errors:
            result["failed"] = True
            result["errors"] = [str(error) for error in errors]
            result["msg"] = (f"{len(errors)} follow-me error(s) on {host}; nothing is changed on any host:\n"
                             + "\n".join(result["errors"]))
            return result
        enabled = sum(1 for declaration in declarations.values() if declaration["enabled"])
        display = Display()
        if display.verbosity >= 1:
            for plan in build_plans(declarations).values():
                display.display(f"{host}: {plan.describe()}")
        result["msg"] = f"{len(declarations)} follow-me declaration(s) valid on {host}, {enabled} enabled"
        return result
