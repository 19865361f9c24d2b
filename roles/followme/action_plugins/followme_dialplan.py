# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for the followme_dialplan module: completes the host's declarations on the controller.

`followme_defaults` and the schema's defaults are merged under each declaration here (the schema
is a controller-side file), then the module runs on the host with complete declarations.
"""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from followme.declarations import completed, field_defaults, load_schema  # noqa: E402


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        declarations = args.pop("declarations", None)
        defaults = args.pop("defaults", None) or {}
        if not isinstance(declarations, dict) or not isinstance(defaults, dict):
            raise AnsibleActionFail("followme_dialplan: declarations and defaults must be mappings")
        schema_path = self._find_needle("files", "followme.schema.json")
        schema_defaults = field_defaults(load_schema(schema_path))
        args["declarations"] = {str(extension): completed(str(extension), declaration, defaults, schema_defaults)
                                for extension, declaration in declarations.items()}
        result.update(self._execute_module(module_name="followme_dialplan", module_args=args,
                                           task_vars=task_vars))
        return result
