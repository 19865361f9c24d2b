"""Smoke check of a running lab: one real call through pbx1.

A SIPp UAS plays device 2002 of pbx1 on the gateway; a SIPp UAC (From user
"caller") dials *2002 on pbx1, which rings the device directly (Dial(PJSIP/2002)).
Passes when the UAS got the INVITE and both sides completed the call.

    python -m lab.smoke [--host 1] [--extension 2002]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.ports import GATEWAY, caller_port_range, device_port

HERE = Path(__file__).resolve().parent
STATE = HERE.parent / ".lab" / "state.json"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lab.smoke")
    ap.add_argument("--host", type=int, default=1, help="host index (default 1)")
    ap.add_argument("--extension", default="2002")
    args = ap.parse_args(argv)

    try:
        state = json.loads(STATE.read_text())
        host = next(h for h in state["hosts"] if h["index"] == args.host)
    except (OSError, ValueError, StopIteration) as e:
        print(f"smoke: lab not up for host {args.host} ({e}); run python -m lab up", file=sys.stderr)
        return 2

    dport = device_port(args.host, args.extension)
    cport = caller_port_range(args.host)[0]
    ssh = [
        "ssh",
        "-i",
        state["ssh_key"],
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        f"root@{host['address']}",
    ]
    common = ["-i", GATEWAY, "-nostdin", "-timeout", "30s", "-timeout_error", "-trace_msg", "-trace_err"]
    ok = False
    with tempfile.TemporaryDirectory(prefix="fmlab-smoke-") as tmp:
        tmpp = Path(tmp)
        # The device: built-in UAS. -aa answers the PBX's qualify OPTIONS (each one
        # would count as a "call", so no -m here: we stop it ourselves).
        uas = subprocess.Popen(
            [
                "sipp",
                "-sn",
                "uas",
                "-p",
                str(dport),
                "-mp",
                str(30000 + dport % 10000),
                "-aa",
                "-message_file",
                "uas.log",
                "-error_file",
                "uas.err",
            ]
            + common,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # PJSIP refuses to dial a contact it last saw Unreachable: re-qualify and wait.
            t0 = time.monotonic()
            reachable = False
            while time.monotonic() - t0 < 15 and not reachable:
                out = subprocess.run(
                    ssh
                    + [
                        f"asterisk -rx 'pjsip qualify {args.extension}' >/dev/null; sleep 0.3; "
                        f"asterisk -rx 'pjsip show contacts'"
                    ],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=20,
                ).stdout
                reachable = any(f"{args.extension}/sip:" in line and " Avail " in line for line in out.splitlines())
            print(
                f"smoke: device {args.extension} reachable from {host['name']}: {reachable} "
                f"({time.monotonic() - t0:.1f} s)"
            )
            t0 = time.monotonic()
            uac = subprocess.run(
                [
                    "sipp",
                    f"{host['address']}:5060",
                    "-sf",
                    str(HERE / "sipp" / "caller.xml"),
                    "-s",
                    f"*{args.extension}",
                    "-p",
                    str(cport),
                    "-mp",
                    str(30000 + cport % 10000),
                    "-m",
                    "1",
                    "-message_file",
                    "uac.log",
                    "-error_file",
                    "uac.err",
                ]
                + common,
                check=False,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            elapsed = time.monotonic() - t0
            # the UAS sees the PBX's BYE right after the caller's: give it a moment
            deadline = time.monotonic() + 5
            uas_log = ""
            while time.monotonic() < deadline:
                uas_log = (tmpp / "uas.log").read_text(errors="replace") if (tmpp / "uas.log").exists() else ""
                if "BYE sip:" in uas_log:
                    break
                time.sleep(0.2)
        finally:
            uas.terminate()
            try:
                uas.wait(timeout=5)
            except subprocess.TimeoutExpired:
                uas.kill()
                uas.wait()
        got_invite = f"INVITE sip:{args.extension}@{GATEWAY}:{dport}" in uas_log
        got_bye = "BYE sip:" in uas_log
        ok = uac.returncode == 0 and got_invite and got_bye
        print(
            f"smoke: {host['name']}: caller -> *{args.extension} -> device at {GATEWAY}:{dport}: "
            f"caller rc={uac.returncode}, device got INVITE={got_invite}, BYE={got_bye}, "
            f"{elapsed:.1f} s: {'OK' if ok else 'FAILED'}"
        )
        if not ok:
            for name in ("uac.log", "uac.err", "uas.log", "uas.err"):
                p = tmpp / name
                if p.exists():
                    print(f"----- {name}\n{p.read_text(errors='replace')[-4000:]}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
