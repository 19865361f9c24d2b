# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: import a FreePBX PBX's Follow Me into the user's inventory, on the controller.

Reads the PBX's AMPUSER keys with the read-only module followme_freepbx_facts, turns them into
declarations (plugin_utils/freepbx.py), leaves out whatever the project's validation refuses
(with a note), and writes two files on the controller: the declarations as YAML and a report of
what was not carried over. A file is written only when its text changes, so a second import with
nothing changed reports changed=false.
"""

from __future__ import annotations

import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.followme.asterisk.plugins.plugin_utils.action import require_controller_libraries
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    LAYERS,
    POLICY_VARIABLES,
    Checker,
    load_schema,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.freepbx import (
    convert,
    group_keys,
    render_report,
    render_yaml,
    settle,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import read_variables

# Documented in plugins/modules/followme_freepbx_import.py (ansible-doc followme.asterisk.followme_freepbx_import).
#: The schema the role ships (roles/followme/files is part of the collection).
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles", "followme", "files",
                      "followme.schema.json")
_ARGS = ("dest", "variable", "file", "report", "voicemail_context", "asterisk")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(_ARGS)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        require_controller_libraries()
        args = self._task.args
        dest = args.get("dest")
        if not dest:
            raise AnsibleActionFail("dest is required: the directory the followme file is written to")
        dest = os.path.abspath(os.path.expanduser(str(dest)))
        variable = args.get("variable") or "followme_host"
        if variable not in LAYERS:
            raise AnsibleActionFail(f"variable = {variable!r}: accepted: {', '.join(LAYERS)}")
        names = {"file": args.get("file") or "followme.yml",
                 "report": args.get("report") or "followme-import-report.md"}
        for option, name in names.items():
            if os.path.basename(name) != name or name in (".", ".."):
                raise AnsibleActionFail(f"{option} = {name!r}: a file name, without a directory")
        host = task_vars.get("inventory_hostname", "?")

        facts = self._execute_module(module_name="followme.asterisk.followme_freepbx_facts",
                                     module_args={"asterisk": args.get("asterisk") or "asterisk"},
                                     task_vars=task_vars)
        if facts.get("failed"):
            result.update(failed=True, msg=f"{host}: {facts.get('msg', 'reading the AMPUSER keys failed')}")
            return result
        keys = facts.get("keys") or {}

        schema = load_schema(SCHEMA)
        checker = Checker(schema)
        policy = read_variables(task_vars, POLICY_VARIABLES, self._templar.template)

        def errors_of(declarations):
            _declarations, errors = checker.check_host(host, {variable: declarations, **policy})
            return [(error.extension, error.path, error.message) for error in errors]

        imported = convert(keys, voicemail_context=args.get("voicemail_context") or "default")
        imported = settle(imported, errors_of)
        total = sum(1 for user in group_keys(keys).values() if any(k.startswith("followme/") for k in user))
        texts = {
            names["file"]: render_yaml(imported.declarations, variable=variable, host=host, report=names["report"]),
            names["report"]: render_report(imported, host=host, variable=variable, yaml_name=names["file"],
                                           total=total),
        }
        changed, diffs = [], []
        for name, text in texts.items():
            path = os.path.join(dest, name)
            before = _read(path)
            if before == text:
                continue
            changed.append(path)
            diffs.append({"before_header": path, "after_header": path, "before": before or "", "after": text})
            if not self._task.check_mode:
                _write(path, text)
        result.update(
            changed=bool(changed), written=changed, diff=diffs,
            path=os.path.join(dest, names["file"]), report=os.path.join(dest, names["report"]),
            imported=len(imported.declarations), not_imported=imported.skipped, notes=len(imported.notes),
            msg=(f"{host}: {len(imported.declarations)} of {total} extension(s) imported into "
                 f"{os.path.join(dest, names['file'])}; {len(imported.notes)} note(s) in {names['report']}"),
        )
        return result


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnsibleActionFail(f"cannot read {path}: {exc}") from exc


def _write(path: str, text: str) -> None:
    """Atomically: a temporary file in the same directory, then a rename."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".followme-import-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise AnsibleActionFail(f"cannot write {path}: {exc}") from exc
