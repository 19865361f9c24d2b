"""Benchmark: every cost of follow-me at scale, each as a ratio against its floor measured in the same run.

For each size (number of declarations on one lab PBX) it measures, on real lab hosts over real SSH:

  validate      playbooks/validate.yml            vs  a no-op play            (same inventory)
  converge      site.yml, file changed            vs  copy + reload of the same file (same inventory)
  no-op rerun   site.yml, nothing changed         vs  copy of the unchanged file      (same inventory)
  reload        `module reload pbx_config.so` with the N extensions  vs  an empty follow-me context
  call setup    caller's INVITE -> first device INVITE, follow-me call   vs  a direct call (median, p90)
  no follow-me  the same for an extension without follow-me (through the site hook)  vs  a direct call,
                and vs the same call with an empty follow-me context
                (the call figures with each of Asterisk's extension matchers: default, trie)
  fleet         site.yml converge on --fleet hosts                       vs  on the first of them
                (the same declarations each, from group_vars)

Playbook times are medians of --rounds alternating runs; call times come from the kernel's timestamps of
the INVITEs on the PBX's link (SIPp places the calls), --calls calls each, interleaved in blocks. The
inventory is generated: `-i inventory/lab -i <temp>` where <temp> gives the host N declarations in
host_vars (one of them templated, as a site's could be), plus the call-bench extension 2001 (list 2002,
no pre-ring); 2001 sorts after every other extension, so each lookup of it walks the whole follow-me
context under the default matcher (the worst case). Leaves the hosts with the bench's declarations deployed:
redeploy what you need afterwards (`site.yml --limit <host>`; the call tests redeploy their own).

    .venv/bin/python bench/scale_bench.py [--host pbx1] [--sizes 1000,10000[,50000]] [--fleet pbx1,...,pbx8]
        [--rounds 3] [--calls 60] [--skip fleet,calls] [--markdown]
    .venv/bin/python bench/scale_bench.py --table results.json [--fleet ...] [--markdown]   (measures nothing)

The table says, for each of issue 8's goals (at 10,000 declarations; the fleet's at every size),
whether this run met it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "collections")]

from ansible_collections.followme.asterisk.plugins.module_utils.dialplan import Settings, render  # noqa: E402
from ansible_collections.followme.asterisk.plugins.module_utils.plan import STRATEGIES  # noqa: E402
from labcall import GATEWAY, answer, ensure_contacts, get_host, ssh  # noqa: E402
from labcall.agents import SippAgent, free_port, stop_all  # noqa: E402
from labcall.call import host_lock  # noqa: E402
from labcall.scenarios import uac_scenario  # noqa: E402

MANAGED = "/etc/asterisk/extensions_followme.conf"
RELOAD = "module reload pbx_config.so"
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
# The floor of converge and of a no-op rerun: what a hand-written playbook shipping the same file does.
COPY = """\
- name: Copy the same-size file and reload on change
  hosts: pbx
  gather_facts: false
  tasks:
    - name: Copy
      ansible.builtin.copy:
        src: {src}
        dest: {dest}
        owner: root
        group: asterisk
        mode: "0640"
      register: copied
    - name: Reload
      ansible.builtin.command: asterisk -rx '{reload}'
      when: copied.changed
      changed_when: true
"""
RELOAD_TIMES = """python3 - <<'PY'
import subprocess, time, json
times = []
for _ in range({reloads}):
    start = time.perf_counter()
    subprocess.run(["asterisk", "-rx", "{reload}"], capture_output=True, check=True)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
PY"""
SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); the module socket does not name it
CALL_BENCH = {"2001": {"list": ["2002"], "strategy": "ringall", "initial_ring_time": 0, "no_answer": "hangup"}}


def declarations(count: int) -> dict:
    """count declarations of every strategy and field kind; one value is a template, as a site's may be."""
    result = {}
    for i in range(count):
        extension = str(100000 + i)
        result[extension] = {
            "list": [str(200000 + i), str(300000 + i), f"9091{i:08d}#"],
            "strategy": STRATEGIES[i % len(STRATEGIES)],
            "initial_ring_time": i % 8,
            "ring_time": 10 + i % 20,
            "no_answer": {"voicemail": extension} if i % 3 else "hangup",
            "confirm_calls": bool(i % 2),
        }
    if count:
        result["100000"]["cid_name_prefix"] = "{{ 'FM' }} "
    return {**result, **CALL_BENCH}


def write_inventory(directory: Path, hosts: list, count: int, *, shared: bool = False) -> None:
    """host_vars/<host>.yml each with the declarations, or (shared) one group_vars/pbx.yml for every host."""
    (directory / "hosts.yml").parent.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump({"pbx": {"hosts": {h.name: {} for h in hosts}}}))
    text = yaml.safe_dump({"followme": declarations(count)}, width=200)
    folder = directory / ("group_vars" if shared else "host_vars")
    folder.mkdir(exist_ok=True)
    for name in ["pbx"] if shared else [h.name for h in hosts]:
        (folder / f"{name}.yml").write_text(text)


class Bench:
    def __init__(self, workdir: Path, hosts: list, verbose: bool, inventory: str = "inventory"):
        self.workdir = workdir
        self.inventory = workdir / inventory
        self.hosts = hosts
        self.verbose = verbose
        (workdir / "noop.yml").write_text(NOOP)

    def play(self, playbook: Path, limit: list, check_changed: int | None = None) -> float:
        command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / "inventory" / "lab"),
                   "-i", str(self.inventory), "--limit", ",".join(h.name for h in limit), str(playbook)]
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{playbook.name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
        if check_changed is not None:
            for host in limit:
                line = next((x for x in done.stdout.splitlines() if x.startswith(host.name + " ") and "ok=" in x), "")
                if f"changed={check_changed}" not in line:
                    sys.exit(f"{playbook.name}: expected changed={check_changed} on {host.name}: {line!r}\n"
                             f"{done.stdout[-3000:]}")
        if self.verbose:
            print(f"    {playbook.name} --limit {','.join(h.name for h in limit)}: {elapsed:.2f} s", flush=True)
        return elapsed

    def reset(self, hosts: list) -> None:
        """Make the next converge a real change: an empty managed file, loaded."""
        for host in hosts:
            ssh(host, f"printf '; reset by bench\\n' > {MANAGED} && asterisk -rx '{RELOAD}' >/dev/null", timeout=120)


def median(values) -> float:
    return statistics.median(values)


def p90(values) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def playbook_figures(bench: Bench, host, rounds: int) -> dict:
    site, validate = ROOT / "site.yml", ROOT / "playbooks" / "validate.yml"
    times = {key: [] for key in ("noop", "validate", "converge", "rerun", "copy", "copy_rerun")}
    rendered = bench.workdir / "rendered.conf"
    for _ in range(rounds):
        times["noop"].append(bench.play(bench.workdir / "noop.yml", [host]))
        times["validate"].append(bench.play(validate, [host]))
        bench.reset([host])
        times["converge"].append(bench.play(site, [host], check_changed=1))
        times["rerun"].append(bench.play(site, [host], check_changed=0))
        if not rendered.exists():
            rendered.write_text(ssh(host, f"cat {MANAGED}", timeout=120).stdout)
            (bench.workdir / "copy.yml").write_text(COPY.format(src=rendered, dest=MANAGED, reload=RELOAD))
        bench.reset([host])
        times["copy"].append(bench.play(bench.workdir / "copy.yml", [host], check_changed=2))
        times["copy_rerun"].append(bench.play(bench.workdir / "copy.yml", [host], check_changed=0))
    return {key: median(values) for key, values in times.items()}


def reload_figures(host, rendered_empty: str, reloads: int) -> dict:
    """Reload with the N extensions that are deployed, then with an empty follow-me context, then back."""
    full = json.loads(ssh(host, RELOAD_TIMES.format(reloads=reloads, reload=RELOAD), timeout=900).stdout)
    with empty_context(host, rendered_empty):
        empty = json.loads(ssh(host, RELOAD_TIMES.format(reloads=reloads, reload=RELOAD), timeout=900).stdout)
    return {"reload": median(full), "reload_floor": median(empty)}


@contextlib.contextmanager
def empty_context(host, rendered_empty: str):
    """The managed file replaced by one with an empty follow-me context (loaded), then put back (loaded)."""
    ssh(host, f"cp -p {MANAGED} {MANAGED}.bench && cat > {MANAGED} <<'EOF'\n{rendered_empty}EOF\n"
              f"asterisk -rx '{RELOAD}' >/dev/null", timeout=60)
    try:
        yield
    finally:
        ssh(host, f"mv {MANAGED}.bench {MANAGED} && asterisk -rx '{RELOAD}' >/dev/null", timeout=300)


def empty_file() -> str:
    return render({}, Settings(context="followme", device="PJSIP/{extension}", outbound_context="from-internal",
                               extension_context="from-internal", voicemail_context="default",
                               confirm_prompt="followme/options", too_late_prompt="followme/sorry",
                               confirm_timeout=5))


class Sniffer:
    """INVITEs crossing a lab PBX's link (the veth fmlab-v<i> on the gateway side), with the kernel's timestamps
    (needs root, as the lab does).

    SIPp places the calls; the times come from the packets themselves (SO_TIMESTAMPNS on an AF_PACKET
    socket), so neither SIPp's scheduler nor its trace writing is in the figure."""

    def __init__(self, host):
        self.host = host
        if not Path(f"/sys/class/net/fmlab-v{host.index}").exists():
            sys.exit(f"no link fmlab-v{host.index} for {host.name}: is it up? (`python -m lab status`)")
        self.invites = []  # (seconds, source ip, source port, destination ip, destination port)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._sock.bind((f"fmlab-v{host.index}", 0))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(65535, 1024)
            except TimeoutError:
                continue
            if len(data) < 42 or data[12:14] != b"\x08\x00" or data[23] != 17:
                continue
            header = (data[14] & 0x0F) * 4
            udp = 14 + header
            if data[udp + 8:udp + 15] != b"INVITE " or b"\r\nTo:" not in data and b"\nTo:" not in data:
                continue
            to = data[udp + 8:].split(b"\nTo:", 1)[1].split(b"\n", 1)[0]
            if b";tag=" in to:
                continue  # a re-INVITE
            stamp = next((struct.unpack("qq", d[:16]) for level, kind, d in ancillary
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            if stamp is None:
                continue
            source_port, destination_port = struct.unpack("!HH", data[udp:udp + 4])
            self.invites.append((stamp[0] + stamp[1] / 1e9, socket.inet_ntoa(data[26:30]), source_port,
                                 socket.inet_ntoa(data[30:34]), destination_port))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def setup_delays(host, targets: dict, calls: int, block: int = 10) -> dict:
    """{target: [seconds from the caller's INVITE to the first INVITE at the target's device]}.

    targets: {dialed number: device extension}. Calls are placed one at a time, in blocks that alternate
    between the targets, by one SIPp caller per block; each device answers at once and the caller hangs up."""
    workdir = Path(tempfile.mkdtemp(prefix=f"followme-bench-calls-{host.name}-"))
    delays = {target: [] for target in targets}
    with host_lock(host):
        devices = {}
        try:
            for extension in sorted(set(targets.values())):
                devices[extension] = SippAgent(extension, answer().scenario_xml(), ip=GATEWAY,
                                               port=host.device_port(extension), workdir=workdir).start()
            ensure_contacts(host, {extension: "Avail" for extension in devices}, agents=devices)
            port = free_port(GATEWAY, host.caller_ports)
            done = 0
            while done < calls:
                count = min(block, calls - done)
                for target, extension in targets.items():
                    delays[target] += _block_of_calls(host, workdir, port, target, devices[extension], count=count)
                done += count
        finally:
            for agent in devices.values():
                agent.stop()
    return delays


def _block_of_calls(host, workdir: Path, port: int, target: str, device: SippAgent, *, count: int) -> list:
    sniffer = Sniffer(host)
    name = f"caller-{target.replace('*', 'star')}-{time.monotonic_ns()}"
    caller = SippAgent(name, uac_scenario(hold=0), ip=GATEWAY, port=port, workdir=workdir,
                       remote=f"{host.address}:5060", service=target)
    command = caller.command()
    command[command.index("-m") + 1] = str(count)
    command += ["-l", "1", "-r", "20"]
    caller.command = lambda: command  # one caller, `count` calls one after the other
    try:
        caller.start()
        if caller.wait(60 + count) is None:
            sys.exit(f"calls to {target} did not end; see {workdir}")
        time.sleep(0.3)
    finally:
        caller.stop()
        sniffer.close()
    sent = [t for t, _, source, destination, _ in sniffer.invites if source == port and destination == host.address]
    received = [t for t, source, _, _, destination in sniffer.invites
                if source == host.address and destination == device.port]
    result = []
    for i, start in enumerate(sent):
        end = sent[i + 1] if i + 1 < len(sent) else None
        first = next((t for t in received if t >= start and (end is None or t < end)), None)
        if first is None:
            sys.exit(f"call {i} to {target}: no INVITE reached device {device.name}; see {workdir}")
        result.append(first - start)
    if len(result) != count:
        sys.exit(f"{target}: {len(result)} calls of {count} seen; see {workdir}")
    return result


MATCHERS = {"default": "false", "trie": "true"}  # `dialplan set extenpatternmatchnew ...`


def call_figures(host, calls: int, rendered_empty: str) -> dict:
    """Call setup with each of Asterisk's two extension matchers (switched at run time, the dialplan as loaded),
    then the call to an extension without follow-me with an empty follow-me context: its floor."""
    result = {}
    try:
        for matcher, value in MATCHERS.items():
            ssh(host, f"asterisk -rx 'dialplan set extenpatternmatchnew {value}'", timeout=60)
            delays = setup_delays(host, {"2001": "2002", "*2002": "2002", "2003": "2003", "*2003": "2003"}, calls)
            for name, target in (("fm", "2001"), ("direct", "*2002"), ("hook", "2003"), ("direct2", "*2003")):
                result[f"{matcher}_{name}_median"] = median(delays[target])
                result[f"{matcher}_{name}_p90"] = p90(delays[target])
    finally:
        ssh(host, "asterisk -rx 'dialplan set extenpatternmatchnew false'", timeout=60)
    with empty_context(host, rendered_empty):
        delays = setup_delays(host, {"2003": "2003"}, calls)
    result["empty_hook_median"], result["empty_hook_p90"] = median(delays["2003"]), p90(delays["2003"])
    return result


def fleet_figures(workdir: Path, fleet: list, size: int, rounds: int, verbose: bool) -> dict:
    """site.yml converging the fleet against converging its first host, the same declarations each: written
    once in group_vars (as a site gives every PBX the same declarations), so that both runs load the same
    inventory and the figure is what each added PBX costs."""
    bench = Bench(workdir, fleet, verbose, inventory="fleet-inventory")
    write_inventory(bench.inventory, fleet, size, shared=True)
    site = ROOT / "site.yml"
    one, many = [], []
    for _ in range(rounds):
        bench.reset(fleet[:1])
        one.append(bench.play(site, fleet[:1], check_changed=1))
        bench.reset(fleet)
        many.append(bench.play(site, fleet, check_changed=1))
    return {"fleet_one": median(one), "fleet_many": median(many)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def s(seconds: float) -> str:
    return f"{seconds:8.2f} s "


# The goals of issue 8, at 10,000 declarations (the fleet's at every size): (kind, limit) where kind "x" is a
# ratio to the floor and "+" a difference from it, in seconds.
GOALS = {
    "converge vs copy+reload": ("x", 1.5),
    "no-op rerun vs copy unchanged": ("x", 1.2),
    "reload vs empty context": ("=", 0.050),
    "follow-me call setup median": ("+", 0.002),
    "follow-me call setup p90": ("+", 0.005),
    "no-follow-me call median vs empty context": ("+", 0.0002),
    "no-follow-me call p90 vs empty context": ("+", 0.0002),
    "fleet of": ("x", 2.5),
}


def _goal(name: str, size: int, value: float, floor: float, fmt) -> str:
    for prefix, (kind, limit) in GOALS.items():
        if name.startswith(prefix) and (size == 10_000 or prefix == "fleet of"):
            measured = {"x": value / floor if floor else float("inf"), "+": value - floor, "=": value}[kind]
            shown = f"{limit:.1f}x" if kind == "x" else (("+" if kind == "+" else "") + fmt(limit).strip())
            return f"<= {shown} {'met' if measured <= limit else 'MISSED'}"
    return ""


def table(results: dict, fleet_size: int, markdown: bool = False) -> str:
    rows = [("figure", "size", "measured", "floor", "ratio", "difference", "goal")]

    def row(name, size, value, floor, fmt):
        rows.append((name, f"{size:,}", fmt(value), fmt(floor), f"{value / floor:6.2f}x" if floor else "-",
                     fmt(value - floor), _goal(name, size, value, floor, fmt)))

    for key, r in results.items():
        size = int(key)
        if "noop" in r:
            row("validate vs no-op play", size, r["validate"], r["noop"], s)
            row("converge vs copy+reload", size, r["converge"], r["copy"], s)
            row("no-op rerun vs copy unchanged", size, r["rerun"], r["copy_rerun"], s)
        if "reload" in r:
            row("reload vs empty context", size, r["reload"], r["reload_floor"], ms)
        for matcher in MATCHERS:
            if f"{matcher}_fm_median" not in r:
                continue
            for stat in ("median", "p90"):
                row(f"follow-me call setup {stat} vs direct ({matcher})", size, r[f"{matcher}_fm_{stat}"],
                    r[f"{matcher}_direct_{stat}"], ms)
            for stat in ("median", "p90"):
                row(f"no-follow-me call {stat} vs direct ({matcher})", size, r[f"{matcher}_hook_{stat}"],
                    r[f"{matcher}_direct2_{stat}"], ms)
            for stat in ("median", "p90"):
                row(f"no-follow-me call {stat} vs empty context ({matcher})", size, r[f"{matcher}_hook_{stat}"],
                    r[f"empty_hook_{stat}"], ms)
        if "fleet_one" in r:
            row(f"fleet of {fleet_size} vs 1 (converge)", size, r["fleet_many"], r["fleet_one"], s)
    reloads = {int(size): r["reload"] for size, r in results.items() if "reload" in r}
    lines = []
    if markdown:
        for index, x in enumerate(rows):
            lines.append("| " + " | ".join(" ".join(str(c).split()) for c in x) + " |")
            if not index:
                lines.append("|---" * len(x) + "|")
    else:
        widths = [max(len(str(x[i])) for x in rows) for i in range(len(rows[0]))]
        for x in rows:
            cells = [str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True))]
            lines.append("  ".join(cells).rstrip())
    sizes = sorted(reloads)
    for small, large in zip(sizes, sizes[1:]):  # noqa: B905 (one shorter on purpose)
        growth = reloads[large] / reloads[small]
        lines.append(f"{'' if not markdown else chr(10)}reload growth {small:,} -> {large:,}: {growth:.1f}x for "
                     f"{large / small:.0f}x the extensions "
                     f"({'no faster than linear' if growth <= large / small else 'FASTER than linear'})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="pbx1", help="lab host of the single-host figures")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated, e.g. 1000,10000,50000")
    parser.add_argument("--fleet", default="", help="comma-separated lab hosts for the fleet figure "
                        "(the first is the single host), e.g. pbx1,pbx2,...,pbx8; empty: no fleet figure")
    parser.add_argument("--rounds", type=int, default=3, help="playbook runs per figure (median)")
    parser.add_argument("--reloads", type=int, default=5, help="reloads per figure (median)")
    parser.add_argument("--calls", type=int, default=60, help="calls per call figure")
    parser.add_argument("--skip", default="", help="comma-separated: playbooks, reload, calls, fleet")
    parser.add_argument("--table", metavar="JSON", help="print the table of results saved from an earlier run "
                        "(the JSON it printed last, on stderr) and measure nothing")
    parser.add_argument("--markdown", action="store_true", help="the table in Markdown (the README's)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text()), len(list(filter(None, args.fleet.split(",")))),
                    args.markdown))
        return
    skip = set(filter(None, args.skip.split(",")))
    host = get_host(args.host)
    fleet = [get_host(name) for name in filter(None, args.fleet.split(","))]
    sizes = [int(x) for x in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="followme-bench-") as temporary:
        for size in sizes:
            workdir = Path(temporary) / str(size)
            workdir.mkdir()
            bench = Bench(workdir, [host], args.verbose)
            write_inventory(bench.inventory, bench.hosts, size)
            print(f"{size:,} declarations on {host.name}...", file=sys.stderr, flush=True)
            r = results[size] = {}
            if "playbooks" not in skip:
                r.update(playbook_figures(bench, host, args.rounds))
            else:
                bench.reset([host])
                bench.play(ROOT / "site.yml", [host], check_changed=1)
            if "reload" not in skip:
                r.update(reload_figures(host, empty_file(), args.reloads))
            if "calls" not in skip:
                r.update(call_figures(host, args.calls, empty_file()))
            if fleet and "fleet" not in skip:
                r.update(fleet_figures(workdir, fleet, size, args.rounds, args.verbose))
    stop_all()
    load = os.getloadavg()
    print(f"\nfollowme scale bench: {os.cpu_count()} CPUs, load {load[0]:.1f} at the end, "
          f"host {host.name}{', fleet ' + ','.join(h.name for h in fleet) if fleet else ''}; "
          f"playbooks: median of {args.rounds}, reloads: median of {args.reloads}, calls: {args.calls} each")
    print(table(results, len(fleet), args.markdown))
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
