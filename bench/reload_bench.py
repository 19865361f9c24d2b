"""Benchmark: what 10,000 follow-me extensions cost Asterisk, on a real lab PBX.

Deploys the role (site.yml, over SSH) to one lab host twice, with no declarations and with N, and
measures, side by side on the same Asterisk: the time of `module reload pbx_config.so` (median of
several) and Asterisk's resident memory after the reloads. Prints the figures and their ratios.
Needs the lab (`python -m lab up`); leaves the host with the empty declaration set deployed.

    .venv/bin/python bench/reload_bench.py [--host pbx2] [--extensions 10000] [--reloads 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from deploy import LAB_INVENTORY, run_playbook  # noqa: E402
from labcall import get_host, ssh  # noqa: E402

STRATEGIES = ["ringall", "hunt", "memoryhunt", "firstavailable", "firstnotonphone", "ringallv2",
              "ringall-prim", "hunt-prim", "memoryhunt-prim", "ringallv2-prim"]
MEASURE = """python3 - <<'PY'
import subprocess, time, statistics
times = []
for _ in range({reloads}):
    start = time.perf_counter()
    subprocess.run(["asterisk", "-rx", "module reload pbx_config.so"], capture_output=True, check=True)
    times.append(time.perf_counter() - start)
pid = open("/run/asterisk/asterisk.pid").read().strip()
rss = [l for l in open(f"/proc/{{pid}}/status") if l.startswith("VmRSS")][0].split()[1]
print(statistics.median(times), int(rss) / 1024)
PY"""


def declarations(count: int) -> dict:
    return {str(100000 + i): {"list": [str(200000 + i), str(300000 + i), f"9091{i:08d}#"],
                              "strategy": STRATEGIES[i % len(STRATEGIES)], "initial_ring_time": i % 8,
                              "ring_time": 10 + i % 20} for i in range(count)}


def deploy_and_measure(host, followme: dict, reloads: int) -> tuple[float, float]:
    run = run_playbook("site.yml", LAB_INVENTORY, limit=host.name,
                       extra_vars={"followme": followme, "followme_defaults": {}, "followme_allow_empty": True})
    if not run.ok:
        sys.exit(run.output[-3000:])
    seconds, rss = ssh(host, MEASURE.format(reloads=reloads), timeout=900).stdout.split()
    return float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="pbx2")
    parser.add_argument("--extensions", type=int, default=10000)
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()
    host = get_host(args.host)
    empty = deploy_and_measure(host, {}, args.reloads)
    full = deploy_and_measure(host, declarations(args.extensions), args.reloads)
    deploy_and_measure(host, {}, 1)
    print(f"{host.name}: module reload pbx_config.so, median of {args.reloads}; Asterisk RSS after them")
    print(f"  no follow-me:       {empty[0]:6.3f} s   {empty[1]:7.1f} MiB")
    print(f"  {args.extensions} extensions: {full[0]:6.3f} s   {full[1]:7.1f} MiB")
    print(f"  difference:         {full[0] - empty[0]:6.3f} s   {full[1] - empty[1]:7.1f} MiB "
          f"(reload ratio {full[0] / empty[0]:.1f})")


if __name__ == "__main__":
    main()
