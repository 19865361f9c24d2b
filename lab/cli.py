"""python -m lab up|down|status [--hosts N]"""

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import base
from lab.host import LAB_DIR, REPO, UTS_DIR, Host, ensure_bridge, known_indices, remove_bridge
from lab.ports import GATEWAY
from lab.util import kill_pids, log, mounts, pids_matching, run, umount_tree

STATE = LAB_DIR / "state.json"
KEY = LAB_DIR / "id_ed25519"
INVENTORY = REPO / "inventory" / "lab" / "hosts.yml"
LOCK = Path("/run/followme-lab.lock")
TOOLS = ["mmdebstrap", "nsenter", "ip", "ssh-keygen", "chroot", "mount"]


def _lock():
    f = open(LOCK, "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _need_root():
    if os.geteuid() != 0:
        sys.exit("the lab needs root (network namespaces, mounts, chroot)")


def _ensure_tools():
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        log(f"missing {', '.join(missing)}: running scripts/install-system-deps.sh")
        subprocess.run(["bash", str(REPO / "scripts" / "install-system-deps.sh")], check=True)


def _ensure_key():
    LAB_DIR.mkdir(exist_ok=True)
    if not (KEY.exists() and Path(str(KEY) + ".pub").exists()):
        for p in (KEY, Path(str(KEY) + ".pub")):
            if p.exists():
                p.unlink()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "followme-lab", "-f", str(KEY)], capture=True)
    os.chmod(KEY, 0o600)
    return Path(str(KEY) + ".pub").read_text()


def _write_inventory(hosts):
    lines = [
        "---",
        "# Written by `python -m lab up` to match the running lab; do not edit by hand.",
        "all:",
        "  children:",
        "    pbx:",
        "      hosts:",
    ]
    for h in hosts:
        lines += [f"        {h.name}:", f"          ansible_host: {h.address}"]
    text = "\n".join(lines) + "\n"
    INVENTORY.parent.mkdir(parents=True, exist_ok=True)
    if not INVENTORY.exists() or INVENTORY.read_text() != text:
        INVENTORY.write_text(text)


def _write_state(hosts):
    state = {"gateway": GATEWAY, "ssh_key": str(KEY), "hosts": [h.state() for h in hosts]}
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, STATE)


def up(n, fresh=False):
    _need_root()
    t0 = time.monotonic()
    _ensure_tools()
    with _lock():
        base_dir = base.ensure()
        pubkey = _ensure_key()
        ensure_bridge()
        hosts = [Host(i) for i in range(1, n + 1)]
        for i in known_indices():
            if i > n and Host(i).has_traces():
                log(f"pbx{i}: not wanted (--hosts {n}): stopping it")
                Host(i).teardown()
        started = []
        for h in hosts:
            problems = ["--fresh"] if fresh else h.problems(base_dir)
            if not problems:
                log(f"{h.name}: already up")
                continue
            log(f"{h.name}: (re)starting: {'; '.join(problems)}")
            h.teardown()
            h.setup(base_dir, pubkey, fresh=fresh)
            h.start()
            started.append(h)
        for h in started:
            h.wait()
            log(f"{h.name}: up ({h.address})")
        _write_state(hosts)
        _write_inventory(hosts)
        base.prune(keep=base_dir)
    log(f"lab up: {n} host(s) in {time.monotonic() - t0:.1f} s; state in {STATE}")
    return 0


def down():
    _need_root()
    with _lock():
        for i in known_indices():
            Host(i).teardown()
        # anything left over from a lab in another checkout, or half-made
        prefixes = (str(LAB_DIR) + "/", str(UTS_DIR) + "/")

        def ours(m):
            return m[2].startswith("fmlab-") or m[0].startswith(prefixes)

        for m in mounts():
            if ours(m) and m[1] == "overlay":
                kill_pids(pids_matching(root=m[0]))
        umount_tree(ours)
        remove_bridge()
        if STATE.exists():
            STATE.unlink()
    log("lab down")
    return 0


def status(n=None):
    try:
        state = json.loads(STATE.read_text())
        indices = [h["index"] for h in state["hosts"]]
    except (OSError, ValueError, KeyError):
        indices = []
    if n is not None:
        indices = list(range(1, n + 1))
    if not indices:
        print("lab: down (no .lab/state.json)")
        return 1
    ok = True
    for i in indices:
        h = Host(i)
        sshd = h.sshd_ok()
        version = h.asterisk_version()
        ok = ok and sshd and bool(version)
        print(
            f"{h.name}\t{h.address}\tsshd={'up' if sshd else 'DOWN'}\t"
            f"asterisk={'up (' + version.split(' built')[0] + ')' if version else 'DOWN'}"
        )
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lab", description="The followme lab of Asterisk PBX hosts.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start (or repair) the lab; idempotent")
    p_up.add_argument("--hosts", type=int, default=2, help="number of PBX hosts (default 2)")
    p_up.add_argument(
        "--fresh", action="store_true", help="reset every host to the baseline (drops what was deployed on them)"
    )
    sub.add_parser("down", help="stop everything and clean up; idempotent")
    p_st = sub.add_parser("status", help="show the hosts; exit 0 only if all are up")
    p_st.add_argument("--hosts", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            if not 1 <= args.hosts <= 89:
                ap.error("--hosts must be 1..89")
            return up(args.hosts, fresh=args.fresh)
        if args.cmd == "down":
            return down()
        return status(args.hosts)
    except (RuntimeError, subprocess.SubprocessError) as e:
        log(f"error: {e}")
        return 1
