"""Lab hosts (PBXs), the port plan, and running commands on a host over SSH."""

from __future__ import annotations

import atexit
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]

if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
from lab.ports import GATEWAY, caller_port_range, carrier_port, device_port  # noqa: E402


class LabError(RuntimeError):
    """The lab is not there, or does not behave as the call library needs."""


def state_path() -> Path:
    return Path(os.environ.get("LABCALL_STATE", REPO_ROOT / ".lab" / "state.json"))


def load_state(path: Path | None = None) -> dict:
    path = Path(path) if path else state_path()
    if not path.exists():
        raise LabError(f"lab is not up: {path} does not exist (run `.venv/bin/python -m lab up`)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LabError(f"lab state {path} is not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class Host:
    """A lab PBX: name (pbx1), index (1), address (10.87.0.11)."""

    name: str
    index: int
    address: str
    netns: str | None = None
    root: str | None = None
    ssh_key: str | None = None
    gateway: str = GATEWAY

    @classmethod
    def from_any(cls, host: Host | Mapping[str, Any], state: dict | None = None) -> Host:
        if isinstance(host, Host):
            return host
        if not isinstance(host, Mapping):
            raise TypeError(f"host must be a Host or a state.json host entry, got {host!r}")
        key = host.get("ssh_key")
        gateway = host.get("gateway")
        if state is None and (key is None or gateway is None):
            try:
                state = load_state()
            except LabError:
                state = {}
        state = state or {}
        return cls(name=str(host["name"]), index=int(host["index"]), address=str(host["address"]),
                   netns=host.get("netns"), root=host.get("root"),
                   ssh_key=key or state.get("ssh_key"),
                   gateway=gateway or state.get("gateway") or GATEWAY)

    def device_port(self, extension: str) -> int:
        return device_port(self.index, extension)

    @property
    def carrier_port(self) -> int:
        return carrier_port(self.index)

    @property
    def caller_ports(self) -> range:
        return caller_port_range(self.index)


def lab_hosts(state: dict | None = None) -> list[Host]:
    state = state if state is not None else load_state()
    return [Host.from_any(h, state) for h in state.get("hosts", [])]


def get_host(name_or_index: str | int, state: dict | None = None) -> Host:
    for host in lab_hosts(state):
        if name_or_index in (host.name, host.index) or str(host.index) == str(name_or_index):
            return host
    raise LabError(f"no lab host {name_or_index!r} in {state_path()}")


# --- SSH --------------------------------------------------------------------
_CONTROL_DIR = Path(tempfile.gettempdir()) / f"labcall-ssh-{os.getuid()}"
_masters_lock = threading.Lock()
_masters: set[str] = set()


def _ssh_options(host: Host) -> list[str]:
    key = host.ssh_key or str(REPO_ROOT / ".lab" / "id_ed25519")
    _CONTROL_DIR.mkdir(mode=0o700, exist_ok=True)
    return [
        "-i", key,
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
        "-o", f"ControlPath={_control_path(host)}",
    ]


def _control_path(host: Host) -> Path:
    # One master per process: closing it (close_masters) cannot cut another
    # test run's commands in flight.
    return _CONTROL_DIR / f"{os.getpid()}-{host.address}"


def _ssh_base(host: Host) -> list[str]:
    # ControlMaster=no: use the master when it is there, else connect directly.
    return ["ssh", *_ssh_options(host), "-o", "ControlMaster=no", f"root@{host.address}"]


def _ensure_master(host: Host) -> None:
    """Start the host's ControlMaster once, detached and with its stdio on
    /dev/null (a master started by `ControlMaster=auto` from a command whose
    output is captured keeps that pipe open, and the caller hangs)."""
    path = _control_path(host)
    with _masters_lock:
        if host.address in _masters and path.exists():
            return
        _masters.add(host.address)
    if path.exists():
        check = subprocess.run(["ssh", *_ssh_options(host), "-O", "check", f"root@{host.address}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, check=False)
        if check.returncode == 0:
            return
        path.unlink(missing_ok=True)  # stale: its master died (lab restarted?)
    subprocess.run(["ssh", *_ssh_options(host), "-o", "ControlMaster=yes", "-o", "ControlPersist=600",
                    "-f", "-N", f"root@{host.address}"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=15, check=False)


def ssh(host: Host, command: str, *, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell command on the host (over one ControlMaster connection per host)."""
    _ensure_master(host)
    try:
        proc = subprocess.run(_ssh_base(host) + [command], check=False, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"ssh {host.name}: {command!r} timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"ssh {host.name}: {command!r} exited {proc.returncode}: "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def asterisk_rx(host: Host, *commands: str, timeout: float = 20) -> str | list[str]:
    """`asterisk -rx` on the host. One command → its stdout; several → a list,
    all run over one SSH round trip."""
    if not commands:
        raise ValueError("no command")
    sep = "@@labcall-sep@@"
    remote = f"; echo {sep}; ".join(f"asterisk -rx {shlex.quote(c)}" for c in commands)
    out = ssh(host, remote, timeout=timeout).stdout
    parts = out.split(sep + "\n")
    if len(parts) != len(commands):
        raise LabError(f"ssh {host.name}: could not split the output of {commands!r}: {out!r}")
    return parts[0] if len(commands) == 1 else parts


@atexit.register
def close_masters() -> None:
    """Stop the ControlMaster connections this process opened."""
    with _masters_lock:
        addresses = list(_masters)
        _masters.clear()
    for address in addresses:
        host = Host(name=address, index=0, address=address)
        subprocess.run(["ssh", *_ssh_options(host), "-O", "exit", f"root@{address}"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=10, check=False)
