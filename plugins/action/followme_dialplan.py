# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for the followme_dialplan module: completes the host's declarations on the controller.

The declarations come from the host's variables (followme, followme_host, followme_defaults), read
from task_vars rather than templated into module arguments (see plugin_utils/variables.py), unless
the task passes `declarations` itself. followme_defaults and the schema's defaults are merged under
each declaration here (the schema is a controller-side file); the module then runs on the host with
complete declarations.
"""

from __future__ import annotations

import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.followme.asterisk.plugins.plugin_utils.action import require_controller_libraries
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    LAYERS,
    completed,
    field_defaults,
    load_schema,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import read_variables


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        require_controller_libraries()
        args = dict(self._task.args)
        if "declarations" in args:
            declarations = args.pop("declarations")
            defaults = args.pop("defaults", None) or {}
        else:
            try:
                variables = read_variables(task_vars, LAYERS + ("followme_defaults",), self._templar.template)
            except ValueError as exc:
                raise AnsibleActionFail(f"followme_dialplan: {exc}; nothing was changed") from None
            declarations = {}
            for layer in LAYERS:
                declarations.update(variables.get(layer) or {})
            defaults = variables.get("followme_defaults") or {}
        if not isinstance(declarations, dict) or not isinstance(defaults, dict):
            raise AnsibleActionFail("followme_dialplan: declarations and defaults must be mappings")
        schema_path = self._find_needle("files", "followme.schema.json")
        schema_defaults = field_defaults(load_schema(schema_path))
        completed_declarations = {str(extension): completed(str(extension), declaration, defaults, schema_defaults)
                                  for extension, declaration in declarations.items()}
        # One JSON string rather than a mapping of thousands of dicts: Ansible's own encoder of module arguments
        # takes seconds over 10,000 declarations, json.dumps a fraction of it; the module's `type: dict` reads
        # a JSON string as the mapping it holds.
        args["declarations"] = json.dumps(completed_declarations, separators=(",", ":"))
        result.update(self._execute_module(module_name="followme.asterisk.followme_dialplan", module_args=args,
                                           task_vars=task_vars))
        return result
