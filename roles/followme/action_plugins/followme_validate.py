# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: validate the follow-me declarations of every PBX host, on the controller.

It never connects to a host: it reads the hosts' variables from the inventory,
checks them against the role's JSON Schema and the cross-checks, and returns
every error of every host at once, or each host's complete declarations and
call plans. Run it once per play (run_once: true).
"""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# The pure-Python core lives in the role's module_utils (shipped to hosts by AnsiballZ for the
# module); on the controller it is imported from there directly.
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from followme.declarations import VARIABLES, check_hosts, load_schema  # noqa: E402
from followme.plan import build_plans  # noqa: E402

DOCUMENTATION = r"""
---
action: followme_validate
short_description: Validate follow-me declarations of PBX hosts on the controller
description:
  - Checks C(followme), C(followme_defaults), C(followme_known_extensions), C(followme_external_allow) and
    C(followme_external_deny) of every host against the role's JSON Schema, then the cross-checks
    (no_answer loops, known extensions, toll-fraud policy). Never connects to a host.
options:
  hosts:
    description: Hosts to check. Default is every host of group C(pbx) and of the play.
    type: list
    elements: str
  schema:
    description: Path of the JSON Schema. Default is the role's C(files/followme.schema.json).
    type: path
"""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("hosts", "schema"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = self._task.args
        hosts = args.get("hosts")
        if hosts is None:
            hosts = sorted(set(task_vars.get("groups", {}).get("pbx", []))
                           | set(task_vars.get("ansible_play_hosts_all", [])))
        schema_path = args.get("schema") or self._find_needle("files", "followme.schema.json")
        try:
            schema = load_schema(schema_path)
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail(f"cannot read the followme schema {schema_path}: {exc}") from exc

        hostvars = task_vars.get("hostvars", {})
        variables = {}
        for host in hosts:
            if host not in hostvars:
                raise AnsibleActionFail(f"host {host} is not in the inventory")
            host_vars = hostvars[host]
            variables[host] = {name: _plain(host_vars[name]) for name in VARIABLES if name in host_vars}

        declarations, errors = check_hosts(schema, variables)
        result["changed"] = False
        result["hosts"] = sorted(variables)
        if errors:
            result["failed"] = True
            result["errors"] = [str(error) for error in errors]
            result["msg"] = (f"{len(errors)} follow-me error(s); nothing was changed on any host:\n"
                             + "\n".join(result["errors"]))
            return result
        result["declarations"] = declarations
        result["plans"] = {host: {extension: plan.describe() for extension, plan in build_plans(found).items()}
                           for host, found in declarations.items()}
        count = sum(len(found) for found in declarations.values())
        result["msg"] = f"{count} follow-me declaration(s) of {len(variables)} host(s) are valid"
        return result


def _plain(value):
    """Inventory values as plain Python (dict, list, str, int, bool, None), keeping their types."""
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value
