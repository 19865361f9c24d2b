"""Benchmark: what validating 10,000 declarations costs on top of Ansible loading the same inventory.

Runs, side by side and alternating, `ansible-playbook playbooks/validate.yml` and a no-op play over one
generated inventory (10 PBX hosts x 1,000 declarations, hosts at unreachable addresses), and prints
the medians, their difference and ratio. Target (issue 2): the difference stays under 1 s.

    .venv/bin/python bench/validate_bench.py [--hosts 10] [--per-host 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ["ringall", "ringall-prim", "hunt", "hunt-prim", "memoryhunt", "memoryhunt-prim",
              "firstavailable", "firstnotonphone", "ringallv2", "ringallv2-prim"]
# The baseline loads every host's variables, as any play with a task does, and does nothing.
NOOP = """\
- name: Load the inventory, do nothing
  hosts: pbx
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.debug:
        msg: no-op
        verbosity: 4
"""


def write_inventory(directory: Path, hosts: int, per_host: int) -> None:
    (directory / "host_vars").mkdir(parents=True)
    inventory = {"pbx": {"hosts": {f"pbx{h}": {"ansible_host": f"192.0.2.{h}"} for h in range(1, hosts + 1)}}}
    (directory / "hosts.yml").write_text(yaml.safe_dump(inventory))
    for h in range(1, hosts + 1):
        followme = {}
        for i in range(per_host):
            extension = str(10000 + i)
            followme[extension] = {
                "list": [str(20000 + i), str(30000 + i), f"9091{i:08d}#"],
                "strategy": STRATEGIES[i % len(STRATEGIES)],
                "initial_ring_time": i % 10,
                "ring_time": 10 + i % 30,
                "no_answer": {"voicemail": extension} if i % 3 else "hangup",
                "confirm_calls": bool(i % 2),
            }
        (directory / "host_vars" / f"pbx{h}.yml").write_text(yaml.safe_dump({"followme": followme}))


def run(playbook: Path, inventory: Path) -> float:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           str(playbook)], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{playbook.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--per-host", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    total = args.hosts * args.per_host
    with tempfile.TemporaryDirectory(prefix="followme-bench-") as temporary:
        inventory = Path(temporary) / "inventory"
        write_inventory(inventory, args.hosts, args.per_host)
        noop = Path(temporary) / "noop.yml"
        noop.write_text(NOOP)
        validate = ROOT / "playbooks" / "validate.yml"
        timings = {"no-op play": [], "validate.yml": []}
        for _ in range(args.rounds):
            timings["no-op play"].append(run(noop, inventory))
            timings["validate.yml"].append(run(validate, inventory))
    base, full = statistics.median(timings["no-op play"]), statistics.median(timings["validate.yml"])
    print(f"{total} declarations on {args.hosts} hosts, {args.rounds} rounds, medians:")
    for name, values in timings.items():
        print(f"  {name:<13} {statistics.median(values):6.2f} s   ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"  validation cost beyond loading the inventory: {full - base:.2f} s (target < 1 s), "
          f"ratio validate/no-op {full / base:.2f}")


if __name__ == "__main__":
    main()
