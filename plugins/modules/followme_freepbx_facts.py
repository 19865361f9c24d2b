#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: read FreePBX's per-extension keys (family AMPUSER) from Asterisk's database. Read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_freepbx_facts
short_description: Read the AMPUSER keys of a FreePBX PBX from Asterisk's database (read-only)
version_added: "1.0.0"
description:
  - Runs one C(asterisk -rx "database query ...") (a SELECT) on the PBX and returns every key of the family
    C(AMPUSER), FreePBX's per-extension settings (its Follow Me is under C(<extension>/followme/)).
  - Never writes anything. C(asterisk -rx) exits 0 even when a command failed, so the output is
    accepted only when every value comes with its length and a last row counts the keys read.
  - Values are read exactly, trailing spaces included (C(database show) pads them away).
  - Used by C(playbooks/import_freepbx.yml) through the action C(followme.asterisk.followme_freepbx_import).
# No forge account yet: "!UNKNOWN" is ansible-test's mark for an author without a GitHub handle.
author:
  - followme developers (!UNKNOWN)
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

#: One read of every AMPUSER key: each key and value ends in "|" (database query pads values with spaces,
#: so the marker keeps trailing spaces, e.g. a CID name prefix "FM "), each value's length comes along to
#: prove it was read whole, and a last row counts the keys.
QUERY = ("SELECT 0 AS o, key || '|' AS k, length(value) AS n, value || '|' AS v FROM astdb "
         "WHERE substr(key, 1, 9) = '/AMPUSER/' "
         "UNION ALL SELECT 1, 'END|', count(*), '|' FROM astdb WHERE substr(key, 1, 9) = '/AMPUSER/' "
         "ORDER BY o, k")
_FIELD = re.compile(r"([onkv]) +: (.*)")


def parse(out: str) -> dict[str, str]:
    """{key without /AMPUSER/: value} from the output of `database query QUERY`; ValueError when incomplete."""
    rows, row = [], {}
    for line in out.split("\n"):
        if not line.strip():
            if row:
                rows.append(row)
            row = {}
            continue
        match = _FIELD.fullmatch(line.rstrip(" "))
        if not match or match.group(1) in row:
            raise ValueError(f"unexpected line {line!r}")
        row[match.group(1)] = match.group(2)
    if row:
        rows.append(row)
    if not rows or rows[-1] != {"o": "1", "k": "END|", "n": rows[-1].get("n", ""), "v": "|"} \
            or not rows[-1]["n"].isdigit():
        raise ValueError("the listing does not end with the count of keys")
    keys = {}
    for row in rows[:-1]:
        if set(row) != {"o", "k", "n", "v"} or row["o"] != "0" or not row["k"].startswith("/AMPUSER/") \
                or not row["k"].endswith("|") or not row["v"].endswith("|") or not row["n"].isdigit():
            raise ValueError(f"unexpected row {row!r}")
        value = row["v"][:-1]
        if len(value) != int(row["n"]):
            raise ValueError(f"{row['k'][:-1]}: a value of {row['n']} characters read as {len(value)}")
        keys[row["k"][len("/AMPUSER/"):-1]] = value
    if len(keys) != int(rows[-1]["n"]):
        raise ValueError(f"{rows[-1]['n']} keys counted, {len(keys)} read")
    return keys


def read_keys(module: AnsibleModule, asterisk: str) -> dict[str, str]:
    command = f'database query "{QUERY}"'
    rc, out, err = module.run_command([asterisk, "-rx", command])
    try:
        if rc != 0:
            raise ValueError(f"exit status {rc}")
        return parse(out)
    except ValueError as exc:
        module.fail_json(msg=f"could not read Asterisk's database with `asterisk -rx '{command}'` "
                             f"(is Asterisk running?): {exc}", rc=rc, stdout=out, stderr=err)
    return {}


def main() -> None:
    module = AnsibleModule(argument_spec={"asterisk": {"type": "str", "default": "asterisk"}},
                           supports_check_mode=True)
    module.exit_json(changed=False, keys=read_keys(module, module.params["asterisk"]))


if __name__ == "__main__":
    main()
