"""SIPp processes: one per agent (device, carrier, caller)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from .hosts import LabError
from .trace import SipMessage, read_trace

SIPP = os.environ.get("LABCALL_SIPP", "sipp")

_live: set[SippAgent] = set()
_live_lock = threading.Lock()


def _udp_bound(ip: str, port: int) -> bool:
    """Whether some socket is bound to ip:port (or *:port) over UDP/IPv4."""
    want_ip = socket.inet_aton(ip)[::-1].hex().upper()
    want_port = f"{port:04X}"
    try:
        with open("/proc/net/udp") as fh:
            next(fh, None)
            for line in fh:
                local = line.split()[1]
                addr, _, prt = local.partition(":")
                if prt == want_port and addr in (want_ip, "00000000"):
                    return True
    except OSError:
        return False
    return False


def free_port(ip: str, candidates) -> int:
    """First port of `candidates` that nothing has bound on ip."""
    for port in candidates:
        if _udp_bound(ip, port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((ip, port))
            except OSError:
                continue
        return port
    raise LabError(f"no free UDP port on {ip} among {candidates!r}")


def media_port_for(sip_port: int) -> int | None:
    """SIPp binds an RTP echo socket pair (audio at -mp, video at -mp + 2) even
    when no media flows; left to itself it scans up from 6000 (100 tries).
    Agents on the lab's port plan (20000..24999) get a fixed, disjoint pair:
    30000 + 4 * (sip_port - 20000)."""
    if 20000 <= sip_port < 25000:
        return 30000 + 4 * (sip_port - 20000)
    return None


class SippAgent:
    """One SIPp process running a generated scenario.

    Server agents (devices, carrier) answer on `port`; a client agent (the
    caller) gets `remote` ("10.87.0.11:5060") and `service` (the dialed
    number, [service] in the scenario) and makes one call (-m 1).
    Every message goes to `trace_path` (-trace_msg) with a wall-clock stamp.
    """

    def __init__(self, name: str, scenario_xml: str, *, ip: str, port: int, workdir: Path,
                 remote: str | None = None, service: str | None = None, lifetime: float = 900,
                 description: str = ""):
        self.name = name
        self.scenario_xml = scenario_xml
        self.ip = ip
        self.port = int(port)
        self.workdir = Path(workdir)
        self.remote = remote
        self.service = service
        self.lifetime = lifetime
        self.description = description
        safe = name.replace("/", "_").replace("*", "star")
        self.scenario_path = self.workdir / f"{safe}.xml"
        self.trace_path = self.workdir / f"{safe}.msg"
        self.stderr_path = self.workdir / f"{safe}.err"
        self.proc: subprocess.Popen | None = None
        self._stderr = None

    def __repr__(self) -> str:
        state = "running" if self.running else f"exit {self.returncode}"
        return f"<SippAgent {self.name} {self.ip}:{self.port} {self.description} {state}>"

    # --- process --------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [SIPP, "-sf", str(self.scenario_path), "-i", self.ip, "-p", str(self.port),
               "-trace_msg", "-message_file", str(self.trace_path),
               "-nostdin", "-timeout", f"{int(self.lifetime)}s"]
        media = media_port_for(self.port)
        if media:
            cmd += ["-mp", str(media)]
        if self.remote:
            cmd[1:1] = [self.remote]
            cmd += ["-m", "1"]
            if self.service:
                cmd += ["-s", self.service]
        return cmd

    def start(self, wait_bound: float = 5.0) -> SippAgent:
        if self.proc is not None:
            raise RuntimeError(f"agent {self.name} already started")
        if shutil.which(SIPP) is None:
            raise LabError(f"{SIPP!r} not found: install sip-tester (Debian) to run lab calls")
        if _udp_bound(self.ip, self.port):
            raise LabError(f"agent {self.name}: UDP {self.ip}:{self.port} is already in use (a call "
                           "through this host by a process that does not take labcall's host lock, "
                           "or a stray SIPp from an earlier run? see `ss -lunp`)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scenario_path.write_text(self.scenario_xml, encoding="utf-8")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     start_new_session=True)
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + wait_bound
        while not _udp_bound(self.ip, self.port):
            if self.proc.poll() is not None:
                err = self.stderr_text()
                self.stop()
                raise LabError(f"agent {self.name}: sipp exited {self.proc.returncode} at start: {err[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(f"agent {self.name}: sipp did not bind {self.ip}:{self.port} within {wait_bound} s")
            time.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end by itself; None if still running at timeout."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0) -> None:
        """End the process (SIGTERM, then SIGKILL); the trace stays."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except ProcessLookupError:
                pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        with _live_lock:
            _live.discard(self)

    # --- trace -----------------------------------------------------------------
    def mark(self) -> int:
        """Current end of the trace: pass to messages(since=...) to read what comes after."""
        try:
            return self.trace_path.stat().st_size
        except FileNotFoundError:
            return 0

    def messages(self, since: int = 0) -> list[SipMessage]:
        return read_trace(self.trace_path, since)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def stop_all() -> None:
    """Stop every agent this process started and has not stopped yet."""
    with _live_lock:
        agents = list(_live)
    for agent in agents:
        agent.stop(grace=1.0)


atexit.register(stop_all)
