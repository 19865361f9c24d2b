"""README "Use it in your own repo", as a user does it: a repository of their own, made from
examples/user-repo, with the collection built from this source tree and installed from the tarball
(no network), validated, checked and applied on a lab PBX over real SSH, with the user repo's own
ansible.cfg (never the project's). Also the pipelines of examples/ (their commands run in that repo)
and its pre-commit hooks.

Lab: the fixture's inventory names only this worker's lab host (FOLLOWME_LAB_HOST=N → pbxN).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deploy import CALLS_INVENTORY, ROOT, PlaybookRun, run_playbook

TEMPLATE = ROOT / "examples" / "user-repo"
BIN = Path(sys.executable).parent
INSTALLED = Path("collections/ansible_collections/followme/asterisk")

pytestmark = pytest.mark.lab


@dataclass
class UserRepo:
    path: Path
    host: str
    tarball: Path
    home: Path  # HOME of the pipeline commands (they write ~/.ssh)

    def env(self, **extra) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        env.update(extra)
        return env

    def run(self, command: str | list[str], *, timeout: float = 600, **env) -> PlaybookRun:
        """A command in the user repo, as its owner types it (a string goes through bash)."""
        if isinstance(command, str):
            command = ["bash", "-euo", "pipefail", "-c", command]
        done = subprocess.run(command, cwd=self.path, env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, check=False)
        return PlaybookRun(done.returncode, done.stdout + done.stderr)

    def commit(self, message: str) -> str:
        for command in (["git", "add", "-A"], ["git", "commit", "-qm", message]):
            subprocess.run(command, cwd=self.path, check=True, capture_output=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.path, check=True, capture_output=True,
                              text=True).stdout.strip()


def _lab_inventory(host) -> str:
    """The user's inventory, pointed at the lab PBX: the lab's key, and (in this inventory only, as the lab's
    host keys change with every `lab up`) no host-key checking."""
    return yaml.safe_dump({"pbx": {
        "hosts": {host.name: {"ansible_host": host.address}},
        "vars": {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
                 "ansible_ssh_private_key_file": str(ROOT / ".lab" / "id_ed25519"),
                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}},
        sort_keys=False)


@pytest.fixture(scope="module")
def user_repo(lab_host, tmp_path_factory):
    base = tmp_path_factory.mktemp("user")
    repo = base / "pbx-config"
    shutil.copytree(TEMPLATE, repo)
    (repo / "inventory" / "hosts.yml").write_text("---\n" + _lab_inventory(lab_host))
    host_vars = repo / "inventory" / "host_vars"
    (host_vars / "pbx-tehran.yml").rename(host_vars / f"{lab_host.name}.yml")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "config", "user.email", "admin@pbx.example"], cwd=repo, check=True)
    subprocess.run(["git", "config", "user.name", "PBX admin"], cwd=repo, check=True)
    home = base / "home"
    home.mkdir()
    made = UserRepo(repo, lab_host.name, base / "dist" / "followme-asterisk-1.0.0.tar.gz", home)
    made.commit("PBX config from the followme example")

    # The release tarball, built from this source tree (outside it: no project ansible.cfg).
    built = made.run([str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT),
                      "--output-path", str(base / "dist")])
    assert built.ok and made.tarball.is_file(), built.output
    installed = made.run([str(BIN / "ansible-galaxy"), "collection", "install", str(made.tarball), "-p", "collections"])
    assert installed.ok, installed.output
    yield made
    # The other lab tests of this worker expect the call declarations on its lab host.
    restored = run_playbook("site.yml", CALLS_INVENTORY, limit=lab_host.name)
    assert restored.ok, restored.output


def test_the_collection_installs_from_its_tarball_into_the_user_repo(user_repo):
    version = user_repo.run("ansible --version")
    assert f"config file = {user_repo.path / 'ansible.cfg'}" in version.output, version.output  # not the project's
    listed = user_repo.run("ansible-galaxy collection list followme.asterisk --format json")
    assert listed.ok, listed.output
    assert json.loads(listed.output.split("\n", 1)[1] if listed.output.startswith("[") else listed.output) == {
        str(user_repo.path / "collections" / "ansible_collections"): {"followme.asterisk": {"version": "1.0.0"}}}
    # requirements.yml names what is now installed: installing it again needs nothing from the network.
    again = user_repo.run("ansible-galaxy collection install -r requirements.yml -p collections --offline")
    assert again.ok and "Nothing to do. All requested collections are already installed." in again.output, \
        again.output
    tree = user_repo.path / INSTALLED
    assert not [p for p in tree.rglob("*") if p.is_symlink()]
    schema = (ROOT / "schemas" / "followme.schema.json").read_bytes()
    assert (tree / "schemas" / "followme.schema.json").read_bytes() == schema
    assert (tree / "roles" / "followme" / "files" / "followme.schema.json").read_bytes() == schema
    for part in ("tests", "lab", "inventory", "examples", "molecule", "collections"):
        assert not (tree / part).exists(), part


def test_the_user_repo_runs_on_lowest_and_newest_ranges_of_its_requirements(user_repo):
    """The user's requirements.txt is the collection's (ranges; make test-min runs the lowest)."""
    def specs(path):
        return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]

    assert specs(user_repo.path / "requirements.txt") == specs(ROOT / "requirements.txt")
    assert all(re.fullmatch(r"[a-z-]+>=[0-9.]+(,<[0-9.]+)?", spec) for spec in specs(ROOT / "requirements.txt"))


def test_editor_modelines_point_at_the_installed_schema(user_repo):
    files = sorted((user_repo.path / "inventory").rglob("*.yml"))
    modelines = {}
    for path in files:
        match = re.search(r"^# yaml-language-server: \$schema=(\S+)$", path.read_text(), re.M)
        if match:
            modelines[path.relative_to(user_repo.path)] = (path.parent / match.group(1)).resolve()
    assert len(modelines) == 2, modelines  # group_vars/pbx/followme.yml and the host's host_vars
    for target in modelines.values():
        assert target == (user_repo.path / INSTALLED / "schemas" / "followme.schema.json").resolve()
    # README "Editors" shows the group_vars file's modeline.
    group_vars = (TEMPLATE / "inventory" / "group_vars" / "pbx" / "followme.yml").read_text().splitlines()
    assert group_vars[1] in (ROOT / "README.md").read_text().splitlines()


def test_an_inventory_that_does_not_exist_fails_with_a_clear_message(user_repo):
    run = user_repo.run("ansible-playbook -i does-not-exist followme.asterisk.validate")
    assert run.returncode != 0, run.output
    assert "No host is in group 'pbx' of the inventory" in run.output, run.output
    assert "Nothing was validated and nothing was changed." in run.output


def test_validate_combines_group_and_host_declarations(user_repo):
    run = user_repo.run("ansible-playbook -i inventory followme.asterisk.validate -v")
    assert run.ok, run.output
    host = user_repo.host
    assert f"3 follow-me declaration(s) valid on {host}, 3 enabled" in run.output
    assert f"{host}: 2001: ring 2001 for 27 s, joined after 7 s by 2002, 909121234567# for 20 s" in run.output
    # 2002 is the host's (host_vars followme_host: memoryhunt over three), not the group's hunt over two.
    assert (f"{host}: 2002: ring 2002 for 7 s; then ring 2003, then add 2004, 2005 one by one, 20 s each step, "
            "all ringing on until 60 s; then extension 2001 [followme_host, inventory/host_vars/") in run.output, \
        run.output
    assert f"{host}: 2010: ring 2011, 909351234567# together for 20 s; then hang up" in run.output, run.output
    assert run.recap[host] == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0}, run.output


def _live_revision(asterisk) -> str:
    shown = asterisk("dialplan show followme-revision")
    match = re.search(r"NoOp\(([0-9a-f]{16})\)", shown)
    return match.group(1) if match else ""


def test_check_diff_then_apply_then_nothing_to_do(user_repo, asterisk):
    """A change as a merge request makes it: revision 1 applied, revision 2 checked, applied, applied again."""
    first = user_repo.run("ansible-playbook -i inventory followme.asterisk.site")
    assert first.ok, first.output
    applied = _live_revision(asterisk)
    assert applied

    group_vars = user_repo.path / "inventory" / "group_vars" / "pbx" / "followme.yml"
    text = group_vars.read_text()
    text = text.replace('list: ["2001", "2002", "909121234567#"]\n    initial_ring_time: 7',
                        'list: ["2001", "2002", "2003"]\n    initial_ring_time: 5')
    group_vars.write_text(text)
    user_repo.commit("2001: ring 5 s alone, then 2003 instead of the mobile")

    check = user_repo.run("ansible-playbook -i inventory followme.asterisk.site --check --diff")
    assert check.ok, check.output
    assert check.recap[user_repo.host]["changed"] == 1, check.output
    assert re.search(r"^-; 2001: ring 2001 for 27 s, joined after 7 s by 2002, 909121234567#", check.output, re.M), \
        check.output
    assert re.search(r"^\+; 2001: ring 2001 for 25 s, joined after 5 s by 2002, 2003", check.output, re.M), \
        check.output
    assert _live_revision(asterisk) == applied, "--check changed the PBX"

    apply = user_repo.run("ansible-playbook -i inventory followme.asterisk.site --diff")
    assert apply.ok, apply.output
    assert apply.recap[user_repo.host]["changed"] == 1, apply.output
    assert _live_revision(asterisk) not in ("", applied)

    again = user_repo.run("ansible-playbook -i inventory followme.asterisk.site")
    assert again.ok, again.output
    assert again.recap[user_repo.host]["changed"] == 0, again.output

    # On the PBX: the group's 2001 and the host's own 2002 (memoryhunt) and 2010 side by side.
    live = asterisk("dialplan show followme")
    for extension in ("2001", "2002", "2010"):
        assert f"'{extension}' =>" in live, live
    assert "'2005'" not in live


def test_plan_comment_for_a_two_revision_change(user_repo):
    """The pipeline's plan step on a merge request: Markdown naming each change in words, with its timeline."""
    group_vars = user_repo.path / "inventory" / "group_vars" / "pbx" / "followme.yml"
    text = group_vars.read_text()
    if '"2003"]\n    initial_ring_time: 5' in text:  # test_check_diff_then_apply_then_nothing_to_do ran here
        text = text.replace('list: ["2001", "2002", "2003"]\n    initial_ring_time: 5',
                            'list: ["2001", "2002", "909121234567#"]\n    initial_ring_time: 7')
        group_vars.write_text(text)
        user_repo.commit("2001 as the target branch has it")
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=user_repo.path, check=True, capture_output=True,
                          text=True).stdout.strip()
    group_vars.write_text(text.replace('list: ["2001", "2002", "909121234567#"]\n    initial_ring_time: 7',
                                       'list: ["2001", "2002", "2003"]\n    initial_ring_time: 5'))
    head = user_repo.commit("2001: ring 5 s alone, then 2003 instead of the mobile")
    command = next(c for c in _gitlab_commands("plan") if "followme.asterisk.plan" in c)
    run = user_repo.run(command, CI_MERGE_REQUEST_DIFF_BASE_SHA=base, CI_COMMIT_SHA=head)
    assert run.ok, run.output
    plan = (user_repo.path / "plan.md").read_text()
    assert re.search(r"^- \*\*2001\*\* \(`followme`, `inventory/group_vars/pbx/followme.yml:\d+`\): "
                     r"initial ring 7 s → 5 s; list \+ 2003, − 909121234567#", plan, re.M), plan
    assert "```mermaid" in plan and "gantt" in plan, plan


# -- pipelines -------------------------------------------------------------------------------------

# Commands of the pipelines that this test does not run, and why (any other command is run):
NOT_RUN = {
    "python -m pip install": "installs the controller's tools from PyPI (make test-min installs requirements-min)",
    "apt-get": "installs Debian packages in the CI image",
    "followme.asterisk.plan": "the plan comment (test_plan_comment_for_a_two_revision_change runs it)",
    "curl ": "posts the plan to GitLab's API",
    "gh pr comment": "posts the plan to GitHub's API",
}


def _not_run(command: str) -> str | None:
    return next((why for marker, why in NOT_RUN.items() if marker in command), None)


def _gitlab_commands(job: str) -> list[str]:
    ci = yaml.safe_load((TEMPLATE / ".gitlab-ci.yml").read_text())
    return list(ci["default"]["before_script"]) + list(ci[job]["script"])


def _github_commands(job: str) -> list[tuple[str, dict]]:
    workflow = yaml.safe_load((TEMPLATE / ".github" / "workflows" / "followme.yml").read_text())
    return [(step["run"], step.get("env", {})) for step in workflow["jobs"][job]["steps"] if "run" in step]


def test_pipelines_are_valid_for_their_vendors():
    for schema, path in (("vendor.gitlab-ci", TEMPLATE / ".gitlab-ci.yml"),
                         ("vendor.github-workflows", TEMPLATE / ".github" / "workflows" / "followme.yml")):
        done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_pipelines_have_the_four_stages_and_apply_only_on_the_protected_branch():
    ci = yaml.safe_load((TEMPLATE / ".gitlab-ci.yml").read_text())
    assert ci["stages"] == ["validate", "plan", "check", "apply"]
    assert ci["apply"]["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]
    assert ci["plan"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    workflow = yaml.safe_load((TEMPLATE / ".github" / "workflows" / "followme.yml").read_text())
    assert workflow["jobs"]["apply"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert workflow["jobs"]["check"]["needs"] == "validate" and workflow["jobs"]["apply"]["needs"] == "check"
    for text in ((TEMPLATE / ".gitlab-ci.yml").read_text(),
                 (TEMPLATE / ".github" / "workflows" / "followme.yml").read_text()):
        assert "StrictHostKeyChecking" not in text and "host_key_checking" not in text
    # The plan command of item 4, exactly: base and head revisions, Markdown into plan.md.
    plan = ("ansible-playbook -i inventory followme.asterisk.plan -e followme_plan_base={base} "
            "-e followme_plan_head={head} -e followme_plan_output=plan.md")
    assert ci["plan"]["script"][0] == plan.format(base='"$CI_MERGE_REQUEST_DIFF_BASE_SHA"', head='"$CI_COMMIT_SHA"')
    step = next(step for step in workflow["jobs"]["validate"]["steps"] if step.get("name") == "Plan")
    assert step["run"] == plan.format(base='"$BASE"', head='"$HEAD"')
    assert step["env"] == {"BASE": "${{ github.event.pull_request.base.sha }}",
                           "HEAD": "${{ github.event.pull_request.head.sha }}"}


def test_gitlab_pipeline_commands_run_in_the_user_repo(user_repo):
    known_hosts = user_repo.home.parent / "known_hosts"
    known_hosts.write_text(_keyscan(user_repo))
    env = {"FOLLOWME_SSH_KEY": str(ROOT / ".lab" / "id_ed25519"), "FOLLOWME_SSH_KNOWN_HOSTS": str(known_hosts),
           "HOME": str(user_repo.home), "CI_DEFAULT_BRANCH": "main", "CI_COMMIT_BRANCH": "main"}
    ran = []
    for job in ("validate", "check", "apply"):
        for command in _gitlab_commands(job):
            if _not_run(command) or command in ran and job != "apply":
                continue
            run = user_repo.run(command, **env)
            assert run.ok, f"{job}: {command}\n{run.output}"
            if "followme.asterisk.site" in command:
                assert run.recap[user_repo.host]["failed"] == run.recap[user_repo.host]["unreachable"] == 0
            ran.append(command)
    assert any("followme.asterisk.validate" in command for command in ran)
    assert any("--check --diff" in command for command in ran)
    assert any("followme.asterisk.site --diff" in command for command in ran)


def test_github_workflow_commands_run_in_the_user_repo(user_repo):
    env = {"HOME": str(user_repo.home), "FOLLOWME_SSH_KEY": (ROOT / ".lab" / "id_ed25519").read_text().strip(),
           "FOLLOWME_SSH_KNOWN_HOSTS": _keyscan(user_repo).strip()}
    ran = []
    for job in ("validate", "check", "apply"):
        for command, step_env in _github_commands(job):
            if _not_run(command):
                continue
            lines = [line for line in command.splitlines() if not _not_run(line)]
            filled = {**step_env, **env}  # the values the CI fills from its expressions
            assert not [name for name, value in filled.items() if "${{" in str(value)], (command, filled)
            run = user_repo.run("\n".join(lines), **filled)
            assert run.ok, f"{job}: {command}\n{run.output}"
            ran.append(command)
    key = user_repo.home / ".ssh" / "followme"
    assert key.read_text().strip() == env["FOLLOWME_SSH_KEY"] and oct(key.stat().st_mode & 0o777) == "0o600"
    assert env["FOLLOWME_SSH_KNOWN_HOSTS"] in (user_repo.home / ".ssh" / "known_hosts").read_text()
    assert any("followme.asterisk.validate" in command for command in ran)
    assert any("--check --diff" in command for command in ran)


def _keyscan(user_repo) -> str:
    """The lab PBX's host key, as an admin pastes it into FOLLOWME_SSH_KNOWN_HOSTS."""
    address = yaml.safe_load((user_repo.path / "inventory" / "hosts.yml").read_text())["pbx"]["hosts"][
        user_repo.host]["ansible_host"]
    scanned = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "5", address], capture_output=True, text=True,
                             check=False, timeout=30).stdout
    assert address in scanned, scanned
    return scanned


# -- pre-commit ------------------------------------------------------------------------------------

def test_pre_commit_hooks_pass_and_catch_a_bad_value(user_repo):
    env = {"PRE_COMMIT_HOME": str(user_repo.home / "pre-commit"), "HOME": str(user_repo.home)}
    good = user_repo.run("pre-commit run --all-files", **env)
    assert good.ok, good.output
    for hook in ("yamllint", "follow-me declarations against the collection's schema", "follow-me validation"):
        assert re.search(rf"^{re.escape(hook)}.*Passed$", good.output, re.M), (hook, good.output)

    host_vars = user_repo.path / "inventory" / "host_vars" / f"{user_repo.host}.yml"
    saved = host_vars.read_text()
    try:
        host_vars.write_text(saved.replace("initial_ring_time: 0", 'initial_ring_time: "0"'))
        subprocess.run(["git", "add", "-A"], cwd=user_repo.path, check=True)
        bad = user_repo.run("pre-commit run --all-files", **env)
        assert bad.returncode != 0, bad.output
        assert re.search(r"^follow-me declarations against the collection's schema.*Failed$", bad.output, re.M)
        assert re.search(r"^follow-me validation.*Failed$", bad.output, re.M), bad.output
        assert f"{user_repo.host}: extension 2010: initial_ring_time = \"0\": must be an integer, not a string" \
            in bad.output, bad.output
    finally:
        host_vars.write_text(saved)
        subprocess.run(["git", "add", "-A"], cwd=user_repo.path, check=True)


# -- a controller without the Python libraries -----------------------------------------------------

def test_a_controller_without_jsonschema_gets_one_line_naming_the_pip_package(user_repo, tmp_path):
    """A virtual environment with ansible-core only (requirements-test.txt's version): validation stops
    with one line naming the pip package to install, never "Unexpected Exception"."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    core = next(line for line in (ROOT / "requirements-test.txt").read_text().splitlines()
                if line.startswith("ansible-core=="))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", core], check=True,
                   capture_output=True, timeout=600)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import jsonschema"], capture_output=True, check=False)
    assert probe.returncode != 0, "jsonschema is importable in the bare environment"
    run = user_repo.run(f"{venv}/bin/ansible-playbook -i inventory followme.asterisk.validate",
                        PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin")
    assert run.returncode != 0, run.output
    assert "Unexpected Exception" not in run.output and "Traceback" not in run.output, run.output
    lines = [line for line in run.output.splitlines() if "followme needs the Python library" in line]
    assert lines, run.output
    assert re.search(r"install it with `\S+/python -m pip install '(fast)?jsonschema>=[0-9.]+'`", lines[0]), lines
