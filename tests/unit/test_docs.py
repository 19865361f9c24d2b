"""The README and the role's defaults stay in step with the schema and the module (one source of truth).

Regenerate the README's field table with:  .venv/bin/python tests/unit/test_docs.py
"""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas/followme.schema.json").read_text())
README = (ROOT / "README.md").read_text()
DEFAULTS = yaml.safe_load((ROOT / "roles/followme/defaults/main.yml").read_text())


def field_table() -> str:
    rows = ["| field | type | default | what it is |", "|---|---|---|---|"]
    for name, field in SCHEMA["definitions"]["fields"]["properties"].items():
        spec = SCHEMA["definitions"]["no_answer"] if "no_answer" in field.get("$ref", "") else field
        kind = spec.get("type", "see below")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        default = json.dumps(spec["default"]) if "default" in spec else "—"
        rows.append(f"| `{name}` | {kind} | `{default}` | {spec['description']} |".replace("`—`", "—"))
    return "\n".join(rows) + "\n"


def test_readme_field_reference_is_the_schema():
    assert field_table() in README, "README field table differs from the schema: run python tests/unit/test_docs.py"


def test_role_defaults_are_the_schema_defaults():
    for name in ("followme_defaults", "followme_known_extensions", "followme_external_allow",
                 "followme_external_deny"):
        assert DEFAULTS[name] == SCHEMA["properties"][name]["default"], name


def test_readme_lists_every_role_variable_with_its_default():
    for name, value in DEFAULTS.items():
        if name in ("followme", "followme_defaults", "followme_external_deny"):
            continue
        shown = json.dumps(value) if not isinstance(value, str) else value
        assert re.search(rf"\| `{name}` \| `{re.escape(shown)}` \|", README), f"{name}: {shown}"
    for pattern in DEFAULTS["followme_external_deny"]:
        assert f"`{pattern}`" in README, pattern


def test_argument_specs_and_module_defaults_match_the_role_defaults():
    specs = yaml.safe_load((ROOT / "roles/followme/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(DEFAULTS)
    for name, option in options.items():
        if "default" in option:
            assert option["default"] == DEFAULTS[name], name
    module = (ROOT / "plugins/modules/followme_dialplan.py").read_text()
    documented = yaml.safe_load(ast.literal_eval(re.search(r'DOCUMENTATION = (r""".*?""")', module, re.S).group(1)))
    for option, spec in documented["options"].items():
        role_variable = {"owner": "followme_file_owner", "group": "followme_file_group", "mode": "followme_file_mode",
                         "declarations": None, "defaults": None, "asterisk": None,
                         "command_timeout": None, "timeout": None}.get(option, f"followme_{option}")
        if role_variable:
            assert spec["default"] == DEFAULTS[role_variable], option


def test_the_role_ships_the_schema_as_a_real_file_equal_to_the_source():
    shipped = ROOT / "roles/followme/files/followme.schema.json"
    assert not shipped.is_symlink(), "a role install or collection build would lose a symlink"
    assert shipped.read_bytes() == (ROOT / "schemas/followme.schema.json").read_bytes(), (
        "cp schemas/followme.schema.json roles/followme/files/")


def test_module_documentation_for_ansible_doc():
    done = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-doc"), "--json",
                           "followme.asterisk.followme_dialplan"], capture_output=True, text=True, check=True,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")), cwd=ROOT)
    found = json.loads(done.stdout)["followme.asterisk.followme_dialplan"]
    assert found["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert found["doc"]["attributes"]["diff_mode"]["support"] == "full"
    assert "followme_dialplan:" in found["examples"]
    assert {"revision", "reloaded", "files", "extension_count"} <= set(found["return"])
    assert "plans" not in found["return"]  # the user needs a count, not a copy of every plan



def test_one_version_number_everywhere():
    """galaxy.yml's version is the changelog's latest release, pyproject's version, and no module was added later."""
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    releases = yaml.safe_load((ROOT / "changelogs/changelog.yaml").read_text())["releases"]
    assert max(releases, key=lambda v: tuple(map(int, v.split(".")))) == version
    assert f'version = "{version}"' in (ROOT / "pyproject.toml").read_text()
    assert f"## v{version.replace('.', chr(92) + '.')}" in (ROOT / "CHANGELOG.md").read_text()
    for module in (ROOT / "plugins/modules").glob("*.py"):
        added = re.search(r'^version_added: "([0-9.]+)"', module.read_text(), re.M)
        assert added and tuple(map(int, added.group(1).split("."))) <= tuple(map(int, version.split("."))), module
    assert yaml.safe_load((ROOT / "meta/runtime.yml").read_text())["requires_ansible"] == ">=2.17.0"
    assert "ansible-core>=2.17," in (ROOT / "requirements.txt").read_text()
    assert "ansible-core==2.17.0" in (ROOT / "requirements-min.txt").read_text()

if __name__ == "__main__":
    print(field_table())


def test_every_role_variable_is_in_the_schema_the_defaults_and_the_readme():
    variables = [name for name in SCHEMA["properties"] if name not in ("followme", "followme_host")]
    assert sorted(variables) == sorted(DEFAULTS)
    for name in variables:
        assert DEFAULTS[name] == SCHEMA["properties"][name]["default"], name
        assert f"`{name}`" in README, name


def test_site_yml_validates_with_any_errors_fatal_in_a_linear_play():
    """README: one host's bad variable stops the play before the install task starts on any host."""
    play = yaml.safe_load((ROOT / "playbooks/site.yml").read_text())[1]
    assert play["strategy"] == "linear" and "serial" not in play
    validate = yaml.safe_load((ROOT / "roles/followme/tasks/validate.yml").read_text())
    assert validate[0]["any_errors_fatal"] is True
    main = yaml.safe_load((ROOT / "roles/followme/tasks/main.yml").read_text())
    assert main[0]["ansible.builtin.import_tasks"] == "validate.yml"
