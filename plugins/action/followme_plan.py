# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: what callers will experience after a merge request, as Markdown.

Runs on the controller and never connects to a PBX. It extracts two git revisions of the
repository that holds the inventory into temporary directories, loads each revision's inventory with
Ansible's own machinery (InventoryManager, VariableManager, DataLoader: host and group variable
precedence exactly as a deploy sees it), completes every declaration of every host of group pbx
with declarations.Checker (defaults as in a deploy) and hands both sides to behaviour.py.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.text.converters import to_text
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.action import ActionBase
from ansible.template import Templar
from ansible.utils.display import Display
from ansible.vars.manager import VariableManager
from ansible_collections.followme.asterisk.plugins.plugin_utils.action import require_controller_libraries
from ansible_collections.followme.asterisk.plugins.plugin_utils.behaviour import (
    MAX_DIAGRAMS,
    SETTINGS,
    HostState,
    Revision,
    plan_markdown,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import (
    VARIABLES,
    Checker,
    layered,
    load_schema,
)
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import read_variables

try:  # where each value was read from (ansible-core 2.19 tags every value loaded from YAML)
    from ansible._internal._datatag._tags import Origin
except ImportError:  # older ansible-core: declarations are shown with their layer only
    Origin = None

# Documentation: plugins/modules/followme_plan.py (ansible-doc followme.asterisk.followme_plan).

#: The schema this collection deploys with: roles/followme/files/followme.schema.json.
SCHEMA = Path(__file__).resolve().parents[2] / "roles" / "followme" / "files" / "followme.schema.json"
GROUP = "pbx"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("base", "head", "output", "inventory", "schema", "max_diagrams"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        result["changed"] = False
        require_controller_libraries()
        args = self._task.args
        base = args.get("base")
        if not isinstance(base, str) or not base.strip():
            raise AnsibleActionFail("followme_plan needs the base revision: -e followme_plan_base=<git revision> "
                                    "(e.g. the merge request's target branch, origin/main)")
        head = args.get("head") or None
        sources = args.get("inventory") or task_vars.get("ansible_inventory_sources") or []
        if isinstance(sources, str):
            sources = [sources]
        schema_path = args.get("schema") or str(SCHEMA)
        try:
            schema = load_schema(schema_path)
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail(f"cannot read the followme schema {schema_path}: {exc}") from exc
        checker = Checker(schema)

        limit = args.get("max_diagrams", MAX_DIAGRAMS)
        if isinstance(limit, str) and limit.isdigit():
            limit = int(limit)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise AnsibleActionFail(f"max_diagrams must be a whole number of diagrams, not {limit!r}")
        repo, relative = _repository(sources)
        with tempfile.TemporaryDirectory(prefix="followme-plan-") as scratch:
            revisions = []
            for side, rev in (("base", base), ("head", head)):
                if rev is None:
                    root, name = repo, "work tree"
                else:
                    commit = _commit(repo, side, rev)
                    root = os.path.join(scratch, side)
                    _extract(repo, commit, root)
                    name = rev if commit.startswith(rev) else f"{rev} ({commit[:10]})"
                revisions.append(self._load(name, root, relative, checker))
        markdown = plan_markdown(*revisions, max_diagrams=limit)

        display = Display()
        output = args.get("output")
        if output:
            path = os.path.abspath(os.path.expanduser(output))
            try:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(markdown)
            except OSError as exc:
                raise AnsibleActionFail(f"cannot write the plan to {path}: {exc}") from exc
            result["output"] = path
        else:
            display.display(markdown)

        head_revision = revisions[1]
        invalid = {host: state.errors for host, state in head_revision.hosts.items() if state.errors}
        if invalid or not head_revision.hosts:
            result["failed"] = True
            problems = list(head_revision.problems) + [message for errors in invalid.values()
                                                       for _ext, message in errors]
            result["msg"] = (f"the head revision ({head_revision.name}) cannot be deployed: "
                             + ("no host in group pbx. " if not head_revision.hosts else "")
                             + f"{len(problems)} problem(s):\n" + "\n".join(problems))
        else:
            result["markdown"] = markdown  # left out of a failure: the callback would print it all a second time
            result["msg"] = (f"plan of {len(head_revision.hosts)} host(s) from {revisions[0].name} to "
                             f"{head_revision.name}" + (f" written to {result['output']}" if output else ""))
        return result

    def _load(self, name: str, root: str, relative: list[str], checker: Checker) -> Revision:
        """One revision: its inventory loaded by Ansible, every pbx host's declarations completed."""
        problems, parsed = [], []
        loader = DataLoader()
        loader.set_basedir(root)  # playbook-adjacent group_vars/host_vars: those of the repository's top level
        secrets = getattr(getattr(self._loader, "_vault", None), "secrets", None)
        if secrets:
            loader.set_vault_secrets(secrets)  # vaulted files of the revision open as in a deploy
        for path in relative:
            source = os.path.join(root, path)
            if not os.path.exists(source):
                problems.append(f"{path}: not in this revision")
                continue
            try:
                ok = InventoryManager(loader, parse=False).parse_source(source)
            except AnsibleError as exc:
                ok = False
                problems.append(f"{path}: {_error_text(exc, root)}")
            if ok:
                parsed.append(source)
            elif not problems or not problems[-1].startswith(f"{path}:"):
                problems.append(f"{path}: did not parse as an inventory")
        if not parsed:
            return Revision(name, {}, problems)
        try:
            inventory = InventoryManager(loader, sources=parsed)
            variables = VariableManager(loader=loader, inventory=inventory)
        except AnsibleError as exc:
            return Revision(name, {}, problems + [_error_text(exc, root)])
        # The revision alone: this command's own -e values (followme_plan_*) belong to neither side.
        variables._extra_vars = {}
        group = inventory.groups.get(GROUP)
        hosts = sorted(group.get_hosts(), key=lambda host: host.name) if group is not None else []
        if not hosts:
            problems.append(f"no host in group {GROUP}")
        states = {}
        for host in hosts:
            states[host.name] = _host_state(host, loader, variables, root, checker)
        return Revision(name, states, problems)


def _host_state(host, loader, variables, root, checker) -> HostState:
    """One host of a revision: its variables as Ansible resolves them, its declarations completed."""
    try:
        all_vars = variables.get_vars(host=host, include_hostvars=False)
        templar = Templar(loader=loader, variables=all_vars)
        values = read_variables(all_vars, VARIABLES + SETTINGS, templar.template)
    except AnsibleError as exc:
        return HostState(errors=[("", f"{host.name}: variables could not be read: {_error_text(exc, root)}")])
    declarations, errors = checker.check_host(host.name, {name: values[name] for name in VARIABLES if name in values})
    origins = {extension: (layer, _origin(all_vars.get(layer), extension, root))
               for extension, layer in layered(values).items()}
    defaults = values.get("followme_defaults")
    return HostState(
        declarations=declarations,
        origins=origins,
        errors=[(error.extension, str(error)) for error in errors],
        defaults=defaults if isinstance(defaults, Mapping) else {},
        settings={name: values[name] for name in SETTINGS if name in values},
    )


def _error_text(exc: AnsibleError, root: str) -> str:
    """An Ansible error with the file and line of the revision it points at, when it or a cause says."""
    text, cause, seen = to_text(exc), exc, set()
    while cause is not None and id(cause) not in seen and Origin is not None:
        seen.add(id(cause))
        where = getattr(cause, "obj", None)
        if where is not None and not isinstance(where, Origin):
            where = Origin.get_tag(where)
        if isinstance(where, Origin) and where.path:
            path = os.path.relpath(where.path, root)
            if not path.startswith(".."):
                return f"{path}{f':{where.line_num}' if where.line_num else ''}: {text}"
        cause = getattr(cause, "orig_exc", None) or cause.__cause__ or cause.__context__
    return text


def _origin(layer_value: Any, extension: str, root: str):
    """"inventory/x/host_vars/pbx1.yml:4" for a declaration read from a file of the revision, else None."""
    if Origin is None or not isinstance(layer_value, Mapping) or extension not in layer_value:
        return None
    tag = Origin.get_tag(layer_value[extension])
    if tag is None or not tag.path:
        return None
    path = os.path.relpath(tag.path, root)
    if path.startswith(".."):
        return None
    return f"{path}:{tag.line_num}" if tag.line_num else path


def _git(repo: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    try:
        return subprocess.run(["git", "-C", repo, *args], stderr=subprocess.PIPE, check=False, **kwargs)
    except OSError as exc:
        raise AnsibleActionFail(f"followme_plan needs git on the controller: {exc}") from exc


def _repository(sources) -> tuple[str, list[str]]:
    """The git work tree that holds every inventory source, and each source's path inside it."""
    if not sources:
        raise AnsibleActionFail("followme_plan needs an inventory: -i <path of the inventory in the git repository>")
    repo, relative = None, []
    for given in sources:
        source = str(given)
        if "," in source and not os.path.exists(source):
            raise AnsibleActionFail(f"inventory {source!r} is a host list, not a file of the git repository")
        path = Path(os.path.abspath(source))
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        folder = existing if existing.is_dir() else existing.parent
        done = _git(str(folder), "rev-parse", "--show-toplevel", text=True)
        if done.returncode != 0:
            raise AnsibleActionFail(f"inventory {source} is not inside a git work tree: {done.stderr.strip()}")
        top = done.stdout.strip()
        if repo is not None and top != repo:
            raise AnsibleActionFail(f"the inventories are in different git repositories: {repo} and {top}")
        repo = top
        inside = Path(os.path.realpath(existing)).relative_to(os.path.realpath(top)) / path.relative_to(existing)
        relative.append(str(inside))
    return repo, relative


def _commit(repo: str, side: str, rev: str) -> str:
    if rev.startswith("-") or "\n" in rev:
        raise AnsibleActionFail(f"{side} revision {rev!r} is not a git revision")
    done = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", text=True)
    if done.returncode != 0:
        raise AnsibleActionFail(f"{side} revision {rev!r} is not a commit of the git repository {repo} "
                                "(in CI, fetch it first, e.g. git fetch origin main)")
    return done.stdout.strip()


def _extract(repo: str, commit: str, target: str) -> None:
    """The files of one commit into `target`, as `git checkout` would write them.

    A throw-away index (git read-tree, then git checkout-index --prefix) rather than git archive:
    .gitattributes' export-ignore must not hide an inventory file, and nothing is left in the
    repository (no worktree to prune, the real index untouched).
    """
    os.makedirs(target)
    index = os.path.join(os.path.dirname(target), os.path.basename(target) + ".index")
    env = dict(os.environ, GIT_INDEX_FILE=index)
    for args in (("read-tree", commit), ("checkout-index", "--all", f"--prefix={target}/")):
        done = _git(repo, *args, env=env)
        if done.returncode != 0:
            raise AnsibleActionFail(f"git {args[0]} {commit} failed: {to_text(done.stderr).strip()}")
