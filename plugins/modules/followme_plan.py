#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the followme_plan action (plugins/action/followme_plan.py); there is no module code."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: followme_plan
short_description: Markdown of what callers will experience after a change, from two git revisions
version_added: "1.0.0"
description:
  - Compares the follow-me declarations of two git revisions of the repository that holds the inventory
    (for example a merge request's target branch and its head) for every host of group C(pbx), and writes
    Markdown a pipeline can post as a merge-request comment.
  - >-
    Per host, the extensions added, removed and changed, each change in words (for example
    C(2001: initial ring 7 s → 5 s; list + 2003, − 909121234567#; no answer: voicemail 2001 → extension 2002)),
    which layer variable (C(followme) or C(followme_host)) and file each declaration comes from, changes of
    C(followme_defaults) and of the role variables that change calls, and the new timeline of each added or
    changed extension as a Mermaid Gantt chart (who rings when, and where the call goes if nobody answers).
  - Each revision is checked out into a temporary directory (a throw-away git index; the repository is left as
    it was) and its inventory is loaded with
    Ansible's own C(InventoryManager) and C(VariableManager), so host and group variable precedence is exactly
    Ansible's. Declarations are completed and validated as in a deploy (C(followme_defaults), then the schema's
    defaults). The extra variables of the command itself (C(-e)) are not applied to either revision.
  - Runs on the controller only; it never connects to a host.
  - Fails when the head revision does not validate, has no inventory at the given path, or names no host in
    group C(pbx); the Markdown is written or printed first and says why. Errors in the base revision are
    reported in the Markdown only.
# No forge account yet: "!UNKNOWN" is ansible-test's mark for an author without a GitHub handle.
author:
  - followme developers (!UNKNOWN)
options:
  base:
    description:
      - The git revision to compare from (a branch, tag or commit, for example C(origin/main)).
    type: str
    required: true
  head:
    description:
      - The git revision to compare to. When omitted, the work tree as it is (uncommitted changes included).
    type: str
  output:
    description:
      - File to write the Markdown to. When omitted, the Markdown is printed.
    type: path
  inventory:
    description:
      - Inventory paths inside the git repository; each is read at the same path in both revisions.
      - Default is the inventory sources of the run (C(ansible_inventory_sources), the C(-i) options).
    type: list
    elements: path
  schema:
    description: Path of the JSON Schema. Default is the collection's C(roles/followme/files/followme.schema.json).
    type: path
  max_diagrams:
    description: At most this many Mermaid diagrams in the Markdown; the words still cover every change.
    type: int
    default: 30
attributes:
  action:
    support: full
    description: Runs on the controller only.
  async:
    support: none
    description: Cannot run asynchronously.
  bypass_host_loop:
    support: none
    description: Runs once, on localhost, for every host of the inventory.
  check_mode:
    support: full
    description: Writes only the Markdown file it is asked for, in check mode too; it never changes a host.
  diff_mode:
    support: none
    description: Changes no host, so there is no diff.
  platform:
    support: full
    description: Runs on the controller only; never connects to a PBX.
    platforms: posix
requirements:
  - git on the controller
  - jsonschema and fastjsonschema on the controller
notes:
  - The playbook C(followme.asterisk.plan) runs it on localhost with C(-e followme_plan_base=<rev>),
    C(-e followme_plan_head=<rev>) and C(-e followme_plan_output=<file.md>).
  - Group and host variables next to the top level of the repository are read as for a playbook there;
    those next to the inventory always are.
seealso:
  - module: followme.asterisk.followme_dialplan
"""

EXAMPLES = r"""
- name: Plan of a merge request, for a comment
  followme.asterisk.followme_plan:
    base: origin/main
    head: HEAD
    output: plan.md

- name: Plan of the work tree against the main branch, printed
  followme.asterisk.followme_plan:
    base: main
"""

RETURN = r"""
markdown:
  description: The plan as Markdown.
  returned: always
  type: str
  sample: "## Follow Me plan: `main (1a2b3c4d5e)` → `work tree`"
output:
  description: The file the Markdown was written to.
  returned: when O(output) is given
  type: str
  sample: /builds/pbx/plan.md
"""
