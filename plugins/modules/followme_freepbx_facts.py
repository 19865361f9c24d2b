#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: read FreePBX's per-extension keys (family AMPUSER) from Asterisk's database. Read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_freepbx_facts
short_description: Read the AMPUSER keys of a FreePBX PBX from Asterisk's database (read-only)
version_added: "1.1.0"
description:
  - Runs C(asterisk -rx "database show AMPUSER") on the PBX and returns every key of the family
    C(AMPUSER), FreePBX's per-extension settings (its Follow Me is under C(<extension>/followme/)).
  - Never writes anything. C(asterisk -rx) exits 0 even when a command failed, so the output is
    accepted only when it ends with Asterisk's C(N results found.) line and N keys were read.
  - C(database show) pads short values with spaces; the C(followme/grppre) keys (CID name prefixes,
    where a trailing space matters) are read again one by one with C(database get), which does not.
  - Used by C(playbooks/import_freepbx.yml) through the action C(followme.asterisk.followme_freepbx_import).
author:
  - followme developers
options:
  asterisk:
    description: The asterisk binary.
    type: str
    default: asterisk
attributes:
  check_mode:
    support: full
    description: Reads only, in check mode too.
"""

EXAMPLES = r"""
- name: Read FreePBX's AMPUSER keys
  followme.asterisk.followme_freepbx_facts:
  register: freepbx
"""

RETURN = r"""
keys:
  description: Every AMPUSER key without the family, e.g. C(2001/followme/grplist), with its value.
  type: dict
  returned: success
  sample: {"2001/followme/grplist": "2001-2002-909121234567#", "2001/followme/ddial": "DIRECT"}
"""

import re

from ansible.module_utils.basic import AnsibleModule

_LINE = re.compile(r"/AMPUSER/(.+?) *: (.*)")
_COUNT = re.compile(r"(\d+) results? found\.")


def read_keys(module: AnsibleModule, asterisk: str) -> dict[str, str]:
    rc, out, err = module.run_command([asterisk, "-rx", "database show AMPUSER"])
    lines = [line for line in out.splitlines() if line.strip()]
    count = _COUNT.fullmatch(lines[-1].strip()) if lines else None
    if rc != 0 or count is None:
        module.fail_json(msg="could not read Asterisk's database with `asterisk -rx \"database show AMPUSER\"` "
                             "(is Asterisk running?)", rc=rc, stdout=out, stderr=err)
    keys = {}
    for line in lines[:-1]:
        match = _LINE.fullmatch(line)
        if not match:
            module.fail_json(msg=f"unexpected line in `database show AMPUSER`: {line!r}", stdout=out)
        keys[match.group(1)] = match.group(2).rstrip(" ")
    if len(keys) != int(count.group(1)):
        module.fail_json(msg=f"`database show AMPUSER` announced {count.group(1)} keys, {len(keys)} were read",
                         stdout=out)
    for key in sorted(k for k in keys if k.endswith("/followme/grppre") and keys[k] and " " not in k):
        rc, out, err = module.run_command([asterisk, "-rx", f"database get AMPUSER {key}"])
        if rc == 0 and out.startswith("Value: ") and out.endswith("\n"):
            keys[key] = out[len("Value: "):-1]
    return keys


def main() -> None:
    module = AnsibleModule(argument_spec={"asterisk": {"type": "str", "default": "asterisk"}},
                           supports_check_mode=True)
    module.exit_json(changed=False, keys=read_keys(module, module.params["asterisk"]))


if __name__ == "__main__":
    main()
