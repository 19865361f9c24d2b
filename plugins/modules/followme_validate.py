#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the followme_validate action (plugins/action/followme_validate.py): it has no module
code, it runs on the controller only, as ansible-core documents its own action-only plugins."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_validate
short_description: Validate the follow-me declarations of a PBX host on the controller
version_added: "1.0.0"
description:
  - Checks C(followme), C(followme_host), C(followme_defaults), the policy (C(followme_known_extensions),
    C(followme_external_allow), C(followme_external_deny)) and every other C(followme_*) role variable of the
    host against the collection's JSON Schema (C(schemas/followme.schema.json)), then the cross-checks
    (no_answer loops, known extensions, toll-fraud policy on list entries and no_answer/goto targets, the
    role's own contexts). Never connects to the host.
  - A variable whose name starts with C(followme) (or is close to a role variable) but is not one is an error.
  - The host's declarations are C(followme) (usually group_vars) and C(followme_host) (host_vars) merged
    by extension, the host's winning. With C(-v) every extension's call plan is printed in words.
  - Every host of the play is checked in the same task, in parallel forks, so one run reports every error
    of every host, each naming host, extension, field path and value; with C(any_errors_fatal) no host is
    touched when any host has an error.
  - Needs the Python libraries C(jsonschema) and C(fastjsonschema) on the controller; without them the task
    fails with one line naming the pip package to install.
# No forge account yet: "!UNKNOWN" is ansible-test's mark for an author without a GitHub handle.
author:
  - followme developers (!UNKNOWN)
options:
  schema:
    description: Path of the JSON Schema. Default is the role's C(files/followme.schema.json).
    type: path
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  bypass_host_loop:
    description: Runs once per host of the play, each with that host's variables.
    support: none
  check_mode:
    description: Changes nothing, so it runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: none
  platform:
    description: Runs on the controller only; never connects to the host.
    support: full
    platforms: all
requirements:
  - jsonschema >= 4.18 (on the controller)
  - fastjsonschema >= 2.16 (on the controller)
seealso:
  - module: followme.asterisk.followme_dialplan
notes:
  - The role C(followme.asterisk.followme) runs this action first (tasks_from C(validate.yml)); the playbook
    C(followme.asterisk.validate) runs only it, for merge-request pipelines.
"""

EXAMPLES = r"""
- name: Validate the follow-me declarations on the controller (with -v, print each call plan)
  followme.asterisk.followme_validate:
  any_errors_fatal: true

- name: Validate against another copy of the schema
  followme.asterisk.followme_validate:
    schema: "{{ playbook_dir }}/schemas/followme.schema.json"
"""

RETURN = r"""
msg:
  description: How many declarations are valid and enabled, or every error of the host, one a line.
  returned: always
  type: str
  sample: 3 follow-me declaration(s) valid on pbx1, 2 enabled
errors:
  description: Every error of the host, each naming host, extension, field path, value and what is accepted.
  returned: failure
  type: list
  elements: str
  sample: ['pbx1: extension 2001: ring_time = "10": must be an integer, not a string']
"""
