"""Run the project's playbooks from tests, as a user would: ansible-playbook over real SSH."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB_INVENTORY = ROOT / "inventory" / "lab"
CALLS_INVENTORY = (LAB_INVENTORY, ROOT / "tests" / "inventories" / "calls")
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                             "failed": int(m.group(5))} for m in _RECAP.finditer(self.output)}


def run_playbook(playbook: str, inventories, *, limit: str | None = None, extra_vars: dict | None = None,
                 check: bool = False, diff: bool = False, verbose: bool = False, timeout: float = 900) -> PlaybookRun:
    command = [str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / playbook)]
    for inventory in inventories if isinstance(inventories, (list, tuple)) else [inventories]:
        command += ["-i", str(inventory)]
    if limit:
        command += ["--limit", limit]
    command += ["--check"] * check + ["--diff"] * diff + ["-v"] * verbose
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="followme-extra-vars-") as extra:
        if extra_vars:
            json.dump(extra_vars, extra)  # a file: large declaration sets do not fit on a command line
            extra.flush()
            command += ["-e", f"@{extra.name}"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    return PlaybookRun(done.returncode, done.stdout + done.stderr)
