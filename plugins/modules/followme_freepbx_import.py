#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the followme_freepbx_import action (plugins/action/followme_freepbx_import.py): it has
no module code of its own, as ansible-core documents its own action-only plugins."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_freepbx_import
version_added: "1.0.0"
short_description: Import a FreePBX PBX's Follow Me settings into a followme YAML file and a report
description:
  - Reads the PBX's C(AMPUSER) keys from Asterisk's database with the read-only module
    M(followme.asterisk.followme_freepbx_facts); nothing is written on the PBX.
  - Writes O(dest)/O(file) (the declarations, in variable O(variable)) and O(dest)/O(report) (what could
    not be carried over) on the controller, each only when its text changes.
  - The declarations pass the project's validation with the host's policy variables
    (C(followme_known_extensions), C(followme_external_allow), C(followme_external_deny)) as the import run
    sees them; anything refused is left out and listed in the report.
# No forge account yet: "!UNKNOWN" is ansible-test's mark for an author without a GitHub handle.
author:
  - followme developers (!UNKNOWN)
options:
  dest:
    description: Directory on the controller, e.g. C(<inventory>/host_vars/<host>); created when missing.
    type: path
    required: true
  variable:
    description:
      - The variable the declarations are written under (C(followme_host) merges over the group's C(followme)).
    type: str
    default: followme_host
    choices: [followme, followme_host]
  file:
    description: File name of the declarations.
    type: str
    default: followme.yml
  report:
    description: File name of the report.
    type: str
    default: followme-import-report.md
  voicemail_context:
    description: The followme_voicemail_context the declarations will be deployed with.
    type: str
    default: default
  asterisk:
    description: The asterisk binary on the PBX.
    type: str
    default: asterisk
attributes:
  action:
    description:
      - Runs on the controller as an action plugin; reads the PBX with M(followme.asterisk.followme_freepbx_facts).
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  bypass_host_loop:
    description: Runs once per host of the play.
    support: none
  check_mode:
    description: Writes nothing in check mode; reports what it would write.
    support: full
  diff_mode:
    description: Shows the change of each file it writes.
    support: full
  platform:
    description: Reads a FreePBX-based PBX over its connection; writes on the controller.
    support: full
    platforms: posix
seealso:
  - module: followme.asterisk.followme_freepbx_facts
"""

EXAMPLES = r"""
- name: Import every FreePBX host's Follow Me into the user's inventory (playbooks/import_freepbx.yml)
  followme.asterisk.followme_freepbx_import:
    dest: "{{ followme_import_dir }}/host_vars/{{ inventory_hostname }}"
    variable: followme_host
"""

RETURN = r"""
path:
  description: The declarations file.
  returned: success
  type: str
  sample: inventory/host_vars/pbx1/followme.yml
report:
  description: The report of what could not be carried over.
  returned: success
  type: str
  sample: inventory/host_vars/pbx1/followme-import-report.md
written:
  description: Files written by this run (none when nothing changed).
  returned: success
  type: list
  elements: str
imported:
  description: How many extensions were imported.
  returned: success
  type: int
not_imported:
  description: Extensions that could not be imported, with the reason.
  returned: success
  type: raw
notes:
  description: How many notes the report has.
  returned: success
  type: int
"""
