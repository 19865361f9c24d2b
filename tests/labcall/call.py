"""Place a real call through a lab PBX and return what every agent saw."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

from lab.ports import EXTENSIONS

from . import scenarios
from .agents import SippAgent, free_port
from .behaviours import Behaviour, ring
from .hosts import Host, LabError, asterisk_rx
from .trace import Headers, SipMessage, display_name, uri_user

CARRIER = "carrier"
CALLER = "caller"
log = logging.getLogger("labcall")
CHANNEL_QUERY_DELAY = 0.3  # s after the caller's 2xx: when place_call looks at its channel

# --- Asterisk state ----------------------------------------------------------
_CONTACT_RE = re.compile(r"^\s*Contact:\s+(\S+?)/(\S+)\s+[0-9a-f]+\s+(\S+)\s+(\S+)\s*$", re.M)


def parse_contacts(output: str) -> dict[int, tuple[str, str]]:
    """`pjsip show contacts` → {contact port: (aor, status)} (Avail, Unavail, NonQual, Unknown…)."""
    result = {}
    for aor, uri, status, _rtt in _CONTACT_RE.findall(output):
        m = re.search(r":(\d+)(?:[;>]|$)", uri)
        if m:
            result[int(m.group(1))] = (aor, status)
    return result


def parse_channels(output: str) -> list[dict[str, str]]:
    """`core show channels concise` → one dict per channel."""
    channels = []
    for line in output.splitlines():
        parts = line.strip().split("!")
        if len(parts) < 14:
            continue
        head, tail = parts[:6], parts[-7:]
        channels.append({
            "channel": head[0], "context": head[1], "exten": head[2], "priority": head[3],
            "state": head[4], "app": head[5], "data": "!".join(parts[6:-7]),
            "callerid": tail[0], "duration": tail[4], "bridge": tail[5], "uniqueid": tail[6],
        })
    return channels


def caller_channels(host: Host, endpoint: str = CALLER) -> list[dict[str, str]]:
    """Channels of the lab's `caller` endpoint (the test callers) on the host, or of another
    endpoint (`carrier`: calls from the trunk, and follow-me's external legs)."""
    out = asterisk_rx(host, "core show channels concise")
    return [c for c in parse_channels(out) if c["channel"].startswith(f"PJSIP/{endpoint}-")]


def device_state(host: Host, extension: str, tech: str = "PJSIP") -> str:
    """DEVICE_STATE(PJSIP/<ext>) as the dialplan sees it (INUSE, NOT_INUSE, RINGING, UNAVAILABLE…),
    evaluated by Asterisk itself (`dialplan eval function`)."""
    host = Host.from_any(host)
    out = asterisk_rx(host, f"dialplan eval function DEVICE_STATE({tech}/{extension})")
    m = re.search(r"^Result:\s*(\S*)", out, re.M)
    if not m:
        raise LabError(f"{host.name}: cannot read DEVICE_STATE({tech}/{extension}): {out.strip()!r}")
    return m.group(1)


def _endpoint_of(host: Host, name: str) -> tuple[str, int]:
    """Agent name → (PJSIP endpoint, contact port)."""
    if name == CARRIER:
        return CARRIER, host.carrier_port
    return name, host.device_port(name)


QUALIFY_TIMEOUT = 0.5  # s, qualify_timeout in lab/asterisk/pjsip.conf.in


def ensure_contacts(host: Host, expected: Mapping[str, str], timeout: float = 15.0,
                    agents: Mapping[str, SippAgent] | None = None) -> dict[str, str]:
    """Make Asterisk see every agent as expected ({"2001": "Avail", "2004": "Unavail"}):
    `pjsip qualify` the ones that differ, poll `pjsip show contacts` until all match.
    Raises LabError naming the ones still wrong after `timeout` s."""
    host = Host.from_any(host)
    wanted = {name: _endpoint_of(host, name) for name in expected}
    qualified_at: dict[str, float] = {}
    started = time.monotonic()
    deadline = started + timeout
    while True:
        contacts = parse_contacts(asterisk_rx(host, "pjsip show contacts"))
        seen = {name: contacts.get(port, ("?", "missing"))[1] for name, (_, port) in wanted.items()}
        # NonQual: qualify is off for that AOR, there is nothing to wait for.
        wrong = [n for n in expected if seen[n] not in (expected[n], "NonQual")]
        # An OPTIONS Asterisk sent before the agents started can still time out (qualify_timeout)
        # and turn a contact Unavail just as the call starts: trust what is seen only once that
        # time has passed since the agents started.
        if not wrong and time.monotonic() - started > QUALIFY_TIMEOUT + 0.2:
            return seen
        if not wrong:
            time.sleep(0.1)
            continue
        if time.monotonic() > deadline:
            lines = []
            for n in wrong:
                line = f"{n}: Asterisk says {seen[n]}, expected {expected[n]}"
                agent = (agents or {}).get(n)
                if agent is not None:
                    line += f" ({agent!r}; stderr: {agent.stderr_text()[-300:].strip()!r})"
                lines.append(line)
            raise LabError(f"{host.name}: contacts not as expected after {timeout} s:\n  " + "\n  ".join(lines))
        now = time.monotonic()
        todo = [n for n in wrong if now - qualified_at.get(n, -1e9) > 2.0]
        if todo:
            asterisk_rx(host, *[f"pjsip qualify {wanted[n][0]}" for n in todo])
            for n in todo:
                qualified_at[n] = now
        time.sleep(0.15)


# --- results -----------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One SIP message an agent sent ("out") or received ("in"), t seconds after
    the caller sent its INVITE."""

    agent: str
    direction: str
    method_or_status: str
    t: float
    request_uri: str | None = None
    headers: Headers = field(default_factory=Headers, repr=False, compare=False)
    call_id: str | None = field(default=None, repr=False)
    cseq_method: str | None = field(default=None, repr=False)
    body: str = field(default="", repr=False, compare=False)
    time: datetime | None = field(default=None, repr=False)

    @property
    def is_request(self) -> bool:
        return not self.method_or_status.isdigit()

    @property
    def method(self) -> str | None:
        return self.method_or_status if self.is_request else None

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.method_or_status)

    @property
    def from_name(self) -> str | None:
        """Display name of the From header ('"Alice" <sip:…>' → 'Alice')."""
        return display_name(self.headers.get("From"))

    @property
    def in_dialog(self) -> bool:
        """A request inside an established dialog (its To has a tag): a re-INVITE, not a new call."""
        return self.is_request and re.search(r";\s*tag=", self.headers.get("To") or "", re.I) is not None

    @property
    def user(self) -> str | None:
        """User part of the Request-URI (requests)."""
        return uri_user(self.request_uri)

    def describe(self) -> str:
        what = self.method_or_status
        if self.is_request:
            what += f" {self.request_uri}"
        else:
            what += f" ({self.cseq_method})" if self.cseq_method and self.cseq_method != "INVITE" else ""
        extra = []
        if self.method_or_status == "INVITE" and self.direction == "in":
            extra.append(f"From: {self.headers.get('From', '')}")
            if "Alert-Info" in self.headers:
                extra.append(f"Alert-Info: {self.headers['Alert-Info']}")
        if self.method_or_status == "INFO":
            extra.append(self.body.replace("\n", " ").strip())
        return what + (f"   [{'; '.join(extra)}]" if extra else "")


@dataclass
class CallResult:
    host: Host
    extension: str
    events: list[Event]
    caller_status: int | None
    answered_by: str | None
    destination: dict[str, str] | None
    duration: float | None
    behaviours: dict[str, str] = field(default_factory=dict)
    caller_name: str = ""
    caller_channel: dict[str, str] | None = None  # the caller's channel while answered
    answer_time: float | None = None              # t of the caller's final response (2xx or not)
    timed_out: bool = False
    started_at: datetime | None = None            # wall clock of t = 0 (the caller's INVITE)
    answers: list[Answer] = field(default_factory=list)  # every ACKed 2xx of an agent, kept or not
    workdir: Path | None = None  # scenarios and traces, kept with LABCALL_KEEP=1

    # --- queries ------------------------------------------------------------
    def for_agent(self, agent: str) -> list[Event]:
        return [e for e in self.events if e.agent == agent]

    def requests(self, agent: str, method: str, direction: str | None = None) -> list[Event]:
        return [e for e in self.events if e.agent == agent and e.method_or_status == method
                and (direction is None or e.direction == direction)]

    def times(self, agent: str, method_or_status: str, direction: str | None = None) -> list[float]:
        return [e.t for e in self.events if e.agent == agent and e.method_or_status == str(method_or_status)
                and (direction is None or e.direction == direction)]

    def invites(self, agent: str) -> list[float]:
        """Times of the dialog-creating INVITEs the agent got (the caller: sent);
        re-INVITEs inside a dialog are left out (see reinvites)."""
        return [e.t for e in self.requests(agent, "INVITE") if not e.in_dialog]

    def reinvites(self, agent: str) -> list[float]:
        return [e.t for e in self.requests(agent, "INVITE") if e.in_dialog]

    def cancels(self, agent: str) -> list[float]:
        return self.times(agent, "CANCEL")

    def byes(self, agent: str) -> list[float]:
        """Times of the BYEs the agent got or sent."""
        return self.times(agent, "BYE")

    def infos(self, agent: str) -> list[float]:
        return self.times(agent, "INFO")

    def invite_events(self, agent: str) -> list[Event]:
        """The dialog-creating INVITEs of the agent (Request-URI, headers…)."""
        return [e for e in self.requests(agent, "INVITE") if not e.in_dialog]

    @property
    def rung(self) -> list[str]:
        """Agents that got at least one INVITE, in order of their first one."""
        order: list[str] = []
        for e in self.events:
            if e.method_or_status == "INVITE" and e.direction == "in" and not e.in_dialog and e.agent not in order:
                order.append(e.agent)
        return order

    # --- display -------------------------------------------------------------
    def summary(self) -> str:
        parts = [f"call {self.host.name} -> {self.extension}"]
        parts.append(f"caller got {self.caller_status}" if self.caller_status else "caller got no final answer")
        if self.answered_by:
            parts.append(f"answered by {self.answered_by}")
        elif self.destination:
            d = self.destination
            parts.append(f"answered by Asterisk: {d.get('context')},{d.get('exten')} {d.get('app')}({d.get('data')})")
        if self.timed_out:
            parts.append("TIMED OUT (hung up by the library)")
        if self.duration is not None:
            parts.append(f"duration {self.duration:.2f} s")
        return "; ".join(parts)

    def format(self) -> str:
        lines = [self.summary()]
        if self.behaviours:
            lines.append("agents: " + ", ".join(f"{k}={v}" for k, v in self.behaviours.items()))
        for e in self.events:
            lines.append(f"  {e.t:8.3f}  {e.agent:<8} {e.direction:<3} {e.describe()}")
        return "\n".join(lines)

    __str__ = format


def _to_events(agent: str, messages: list[SipMessage], t0: datetime) -> list[Event]:
    # Only dialogs this call started: a BYE that ends an earlier call's dialog (a confirm leg still
    # playing a prompt when that call ended, an occupying call) is not part of this timeline.
    dialogs = {m.call_id for m in messages if m.method == "INVITE" and m.direction == "in"}
    events = []
    for m in messages:
        if m.method == "OPTIONS" or (not m.is_request and m.cseq_method == "OPTIONS"):
            continue
        if agent != CALLER and m.call_id not in dialogs:
            continue
        events.append(Event(agent=agent, direction=m.direction, method_or_status=m.label,
                            t=(m.time - t0).total_seconds(), request_uri=m.request_uri,
                            headers=m.headers, call_id=m.call_id, cseq_method=m.cseq_method,
                            body=m.body, time=m.time))
    return events


@dataclass(frozen=True)
class Answer:
    """An agent's 2xx to an INVITE that the PBX ACKed: the dialog ran from `t`
    (the 2xx) to `ended` (its first BYE, or None if none was seen)."""

    agent: str
    t: float
    ended: float | None
    call_id: str | None


def _answers(events: list[Event]) -> list[Answer]:
    out = []
    for ok in events:
        if (ok.agent == CALLER or ok.direction != "out" or ok.is_request
                or ok.cseq_method != "INVITE" or not 200 <= (ok.status or 0) < 300):
            continue
        same = [e for e in events if e.agent == ok.agent and e.call_id == ok.call_id and e.t >= ok.t]
        if not any(e.method_or_status == "ACK" and e.direction == "in" for e in same):
            continue
        if any(a.agent == ok.agent and a.call_id == ok.call_id for a in out):
            continue  # a re-INVITE's 200 in the same dialog
        byes = [e.t for e in same if e.method_or_status == "BYE"]
        out.append(Answer(agent=ok.agent, t=ok.t, ended=min(byes) if byes else None, call_id=ok.call_id))
    return out


KEPT_MARGIN = 0.5  # s: a dialog that ended this close to the caller's end counts as kept


def _answered_by(events: list[Event], answers: list[Answer]) -> str | None:
    """The agent whose answered dialog was kept until the caller's call ended
    (a device that answered and was then hung up by the PBX, e.g. after
    declining, does not count); the longest such dialog if several."""
    caller_end = max((e.t for e in events if e.agent == CALLER), default=0.0)
    best, best_len = None, -1.0
    for a in answers:
        if a.ended is not None and a.ended < caller_end - KEPT_MARGIN:
            continue
        length = (a.ended if a.ended is not None else caller_end) - a.t
        if length > best_len:
            best, best_len = a.agent, length
    return best


# --- occupied devices -----------------------------------------------------------
_occupied: dict[tuple[str, str], Occupied] = {}
_occupied_lock = threading.Lock()


@dataclass
class Occupied:
    """A device kept "in a call" by occupy(). Pass it as the device's behaviour
    to place_call (`agents={"2005": occ}`): its agent keeps running and records
    the INVITEs of the new call too."""

    host: Host
    extension: str
    agent: SippAgent
    then: Behaviour
    caller: SippAgent
    channel: str | None = None

    def state(self) -> str:
        return device_state(self.host, self.extension)

    def __str__(self) -> str:
        return f"occupied, then {self.then}"


# --- one call at a time per lab host -------------------------------------------------
_held: dict[str, tuple[int, Any]] = {}
_held_lock = threading.RLock()
LOCK_TIMEOUT = float(os.environ.get("LABCALL_LOCK_TIMEOUT", "600"))


@contextmanager
def host_lock(host: Host, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the host's call lock (a flock on /tmp/labcall-lock-<address>): the
    device ports of a host serve one call at a time, so two test runs (two
    developers, two processes) calling through the same PBX take turns instead
    of failing. Re-entrant inside one process (occupy() around place_call)."""
    with _held_lock:
        depth, fh = _held.get(host.address, (0, None))
        if depth:
            _held[host.address] = (depth + 1, fh)
    if not depth:
        fh = open(Path(tempfile.gettempdir()) / f"labcall-lock-{host.address}", "a+")  # noqa: SIM115
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fh.close()
                    raise LabError(f"{host.name}: another process has been calling through it for "
                                   f"{timeout:.0f} s (lock /tmp/labcall-lock-{host.address})") from None
                time.sleep(0.2)
        with _held_lock:
            _held[host.address] = (1, fh)
    try:
        yield
    finally:
        with _held_lock:
            depth, fh = _held[host.address]
            if depth > 1:
                _held[host.address] = (depth - 1, fh)
            else:
                del _held[host.address]
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()


# --- placing calls ------------------------------------------------------------------
def _workdir(host: Host, what: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"labcall-{host.name}-{what}-"))


def _keep_files() -> bool:
    return os.environ.get("LABCALL_KEEP", "") not in ("", "0")


def _call_messages(agent: SippAgent, since: int) -> int:
    """How many non-OPTIONS messages the agent logged since `since`."""
    return sum(1 for m in agent.messages(since)
               if m.method != "OPTIONS" and not (not m.is_request and m.cseq_method == "OPTIONS"))


def _wait_quiet(agents: dict[str, SippAgent], marks: dict[str, int], quiet: float = 0.3,
                limit: float = 3.0) -> None:
    """Wait until no agent has logged a call message (qualify OPTIONS aside) for
    `quiet` s (at most `limit` s): the last BYEs and ACKs are in."""
    counts = {n: _call_messages(a, marks.get(n, 0)) for n, a in agents.items()}
    last_change = time.monotonic()
    deadline = last_change + limit
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = {n: _call_messages(a, marks.get(n, 0)) for n, a in agents.items()}
        if now != counts:
            counts, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return


def _final_status(messages: list[SipMessage]) -> tuple[int | None, datetime | None]:
    for m in messages:
        if m.direction == "in" and not m.is_request and m.cseq_method == "INVITE" and (m.status or 0) >= 200:
            return m.status, m.time
    return None, None


def _hangup(host: Host, channel: str) -> None:
    asterisk_rx(host, f"channel request hangup {channel}")


def _new_caller_channel(host: Host, before: set[str], endpoint: str = CALLER) -> dict[str, str] | None:
    fresh = [c for c in caller_channels(host, endpoint) if c["channel"] not in before]
    if endpoint != CALLER and fresh:
        # The carrier endpoint also carries follow-me's external legs: the caller's channel is
        # the first one made (the lowest unique id).
        return min(fresh, key=lambda c: tuple(int(x) for x in c["uniqueid"].split(".") if x.isdigit()))
    return fresh[-1] if fresh else None


def place_call(host: Host | Mapping[str, Any], extension: str,  # noqa: PLR0917 (the documented signature)
               agents: Mapping[str, Behaviour | Occupied] | None = None,
               carrier: Behaviour | Occupied | None = None, hold: float = 1.0, timeout: float = 60,
               caller_name: str = "Alice", *, ready_timeout: float = 15.0, trunk_caller: str | None = None,
               digits: str = "", press_after: float = 1.0, digit_gap: float = 0.3,
               caller_user: str = CALLER) -> CallResult:
    """Call `extension` on `host` from a SIPp caller and record what every agent saw.

    agents: device extension → behaviour (or an Occupied from occupy()); every
    device not named rings (ring()); `unreachable()` must be explicit.
    carrier: the trunk's far end (default ring()).
    hold: seconds the caller stays after a 2xx before its BYE.
    timeout: seconds after the INVITE without a final answer before the
    library hangs the call up in Asterisk (`channel request hangup`).
    trunk_caller: call in from the trunk instead (a DID call): the INVITE carries
    the lab's carrier header (X-Lab-Trunk, see lab/asterisk/pjsip.conf.in), so
    Asterisk takes it as the `carrier` endpoint (context from-carrier), with this
    number as its From user (the caller ID), e.g. "09121234567".
    digits: DTMF the caller sends once answered (in-dialog INFOs, the first
    `press_after` s after the 2xx, then `digit_gap` s apart); `hold` counts from
    the last one.
    caller_user: the From user, i.e. the PJSIP endpoint the call comes in on: "caller" (an internal
    caller) or "pstn" (a call from outside on the trunk, e.g. to a DID 5550<ext>).
    """
    host = Host.from_any(host)
    if trunk_caller is not None and not str(trunk_caller).isdigit():
        raise ValueError(f"trunk_caller is a phone number (digits), got {trunk_caller!r}")
    caller = _Dialer(user=str(trunk_caller) if trunk_caller is not None else caller_user,
                     endpoint=CARRIER if trunk_caller is not None else caller_user,
                     headers="X-Lab-Trunk: carrier\n" if trunk_caller is not None else "",
                     digits=str(digits), press_after=press_after, digit_gap=digit_gap)
    began = time.monotonic()
    with host_lock(host):
        log.debug("%s: host lock after %.3f s", host.name, time.monotonic() - began)
        return _place_call(host, str(extension), dict(agents or {}), carrier, hold, timeout,
                           caller_name, ready_timeout, caller)


@dataclass(frozen=True)
class _Dialer:
    """How the caller calls in: as the lab's `caller` endpoint, or from the trunk."""

    user: str = CALLER
    endpoint: str = CALLER
    headers: str = ""
    digits: str = ""
    press_after: float = 1.0
    digit_gap: float = 0.3


def _place_call(host: Host, extension: str, agents: dict, carrier, hold: float, timeout: float,  # noqa: PLR0917
                caller_name: str, ready_timeout: float, dialer: _Dialer = _Dialer()) -> CallResult:
    unknown = sorted(set(agents) - set(EXTENSIONS))
    if unknown:
        raise ValueError(f"unknown device extensions {unknown}; devices are {EXTENSIONS[0]}..{EXTENSIONS[-1]}")
    plan: dict[str, Behaviour | Occupied] = {ext: agents.get(ext) or ring() for ext in EXTENSIONS}
    plan[CARRIER] = carrier or ring()

    workdir = _workdir(host, extension.replace("*", "star"))
    started: list[SippAgent] = []
    running: dict[str, SippAgent] = {}
    marks: dict[str, int] = {}
    expected: dict[str, str] = {}
    caller: SippAgent | None = None
    result_ok = False
    setup = time.monotonic()
    try:
        # 1. agents
        for name, what in plan.items():
            with _occupied_lock:
                occ = _occupied.get((host.address, name))
            if isinstance(what, Occupied):
                if (what.host.address, what.extension) != (host.address, name) or what.agent.proc is None:
                    raise LabError(f"{name}: the Occupied passed is for {what.host.name}/{what.extension}")
                agent = what.agent
            elif occ is not None:
                if name in agents:
                    raise LabError(f"{name} is occupied (occupy()); pass the Occupied object as its "
                                   f"behaviour, not {what}")
                agent = occ.agent
                plan[name] = occ
            elif not what.listens:
                expected[name] = "Unavail"
                continue
            else:
                _, port = _endpoint_of(host, name)
                agent = SippAgent(name, what.scenario_xml(name=f"labcall-{name}"), ip=host.gateway,
                                  port=port, workdir=workdir, lifetime=timeout + 3 * hold + 300,
                                  description=str(what))
                started.append(agent)
                agent.start()
            if not agent.running:
                raise LabError(f"agent {name} is not running: {agent.stderr_text()[-500:]}")
            running[name] = agent
            expected[name] = "Avail"

        log.debug("%s: %d agents started in %.3f s", host.name, len(started), time.monotonic() - setup)
        # 2. Asterisk must see them as we mean them
        ensure_contacts(host, expected, timeout=ready_timeout, agents=running)
        log.debug("%s: contacts as expected after %.3f s", host.name, time.monotonic() - setup)
        before = {c["channel"] for c in caller_channels(host, dialer.endpoint)}
        marks = {name: agent.mark() for name, agent in running.items()}

        # 3. the call
        caller = SippAgent(CALLER, scenarios.uac_scenario(caller_name=caller_name, hold=hold,
                                                          caller_user=dialer.user, headers=dialer.headers,
                                                          digits=dialer.digits, press_after=dialer.press_after,
                                                          digit_gap=dialer.digit_gap),
                           ip=host.gateway, port=free_port(host.gateway, host.caller_ports),
                           workdir=workdir, remote=f"{host.address}:5060", service=extension,
                           lifetime=timeout + hold + 120, description=f"calls {extension}")
        started.append(caller)
        caller.start()
        begun = time.monotonic()
        status = None
        answered_mono = None
        channel_info = None
        query_at = None
        timed_out = False
        hung_up_at = None
        while caller.running:
            now = time.monotonic()
            if status is None:
                status, _ = _final_status(caller.messages())
                if status is not None:
                    answered_mono = now
                    if 200 <= status < 300:
                        # Where is the caller's channel? Asked a moment after the
                        # answer (Answer() → Wait() has moved on by then), while
                        # the caller still holds the call.
                        query_at = now + min(CHANNEL_QUERY_DELAY, hold / 2)
            if query_at is not None and now >= query_at:
                query_at = None
                channel_info = _new_caller_channel(host, before, dialer.endpoint)
            unanswered_too_long = status is None and now - begun > timeout
            pressing = (dialer.press_after + dialer.digit_gap * len(dialer.digits)) if dialer.digits else 0
            overdue = answered_mono is not None and now - answered_mono > hold + pressing + 10
            if (unanswered_too_long or overdue) and hung_up_at is None:
                timed_out = True
                hung_up_at = now
                chan = _new_caller_channel(host, before, dialer.endpoint)
                if chan:
                    _hangup(host, chan["channel"])
            if hung_up_at is not None and now - hung_up_at > 5:
                caller.stop()
                break
            time.sleep(0.02)
        log.debug("%s: caller ended %.3f s after its start", host.name, time.monotonic() - begun)
        _wait_quiet({CALLER: caller, **running}, marks)
        log.debug("%s: quiet %.3f s after the caller's start", host.name, time.monotonic() - begun)
        result_ok = True
    except BaseException as exc:
        exc.add_note(f"labcall: scenarios, SIPp traces and stderr kept in {workdir}")
        raise
    finally:
        for agent in reversed(started):
            agent.stop()

    # 4. the timeline
    caller_msgs = caller.messages() if caller else []
    t0 = next((m.time for m in caller_msgs if m.direction == "out" and m.method == "INVITE"), None)
    if t0 is None:
        raise LabError(f"the caller sent no INVITE: {caller.stderr_text()[-1000:] if caller else ''}")
    events = _to_events(CALLER, caller_msgs, t0)
    for name, agent in running.items():
        events += _to_events(name, agent.messages(marks.get(name, 0)), t0)
    events.sort(key=lambda e: (e.t, e.agent != CALLER))
    status, status_time = _final_status(caller_msgs)
    answers = _answers(events)
    answered_by = _answered_by(events, answers)
    destination = None
    if status is not None and 200 <= status < 300 and answered_by is None and channel_info:
        destination = {k: channel_info[k] for k in ("context", "exten", "priority", "app", "data", "channel", "state")}
    caller_events = [e for e in events if e.agent == CALLER]
    result = CallResult(
        host=host, extension=extension, events=events, caller_status=status,
        answered_by=answered_by, destination=destination,
        duration=max(e.t for e in caller_events) if caller_events else None,
        behaviours={k: str(v) for k, v in plan.items()}, caller_name=caller_name,
        caller_channel=channel_info,
        answer_time=(status_time - t0).total_seconds() if status_time else None,
        timed_out=timed_out, started_at=t0, answers=answers)
    if result_ok and not _keep_files():
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result.workdir = workdir
    return result


@contextmanager
def occupy(host: Host | Mapping[str, Any], extension: str, then: Behaviour | None = None,
           timeout: float = 15.0, caller_name: str = "Occupier") -> Iterator[Occupied]:
    """Put a device "in a call" for the duration of the `with` block.

    Starts the device's agent (it answers this first call at once and keeps
    it; every later INVITE follows `then`, default ring(), like a phone with
    call waiting), calls `*<ext>` from a second caller and yields once
    DEVICE_STATE(PJSIP/<ext>) is INUSE. Pass the yielded Occupied as the
    device's behaviour to place_call. On exit the call is hung up in Asterisk
    and both agents stop.
    """
    host = Host.from_any(host)
    extension = str(extension)
    if extension not in EXTENSIONS:
        raise ValueError(f"unknown device extension {extension!r}")
    then = then or ring()
    if not then.listens:
        raise ValueError("an occupied device is reachable: `then` cannot be unreachable()")
    with host_lock(host):
        yield from _occupy(host, extension, then, timeout, caller_name)


def _occupy(host: Host, extension: str, then: Behaviour, timeout: float,
            caller_name: str) -> Iterator[Occupied]:
    key = (host.address, extension)
    with _occupied_lock:
        if key in _occupied:
            raise LabError(f"{host.name}/{extension} is already occupied")
    workdir = _workdir(host, f"occupy{extension}")
    agent = SippAgent(extension, then.scenario_xml(name=f"labcall-occupied-{extension}", occupy=True),
                      ip=host.gateway, port=host.device_port(extension), workdir=workdir,
                      lifetime=3 * 3600, description=f"occupied, then {then}")
    caller = None
    occ = None
    try:
        agent.start()
        ensure_contacts(host, {extension: "Avail"}, agents={extension: agent})
        before = {c["channel"] for c in caller_channels(host)}
        caller = SippAgent("occupier", scenarios.uac_scenario(caller_name=caller_name, hold=None),
                           ip=host.gateway, port=free_port(host.gateway, host.caller_ports),
                           workdir=workdir, remote=f"{host.address}:5060", service=f"*{extension}",
                           lifetime=3 * 3600, description=f"calls *{extension}")
        caller.start()
        deadline = time.monotonic() + timeout
        state = None
        while True:
            state = device_state(host, extension)
            if state == "INUSE":
                break
            if time.monotonic() > deadline or not caller.running:
                raise LabError(f"{host.name}: DEVICE_STATE(PJSIP/{extension}) is {state}, not INUSE, "
                               f"{timeout} s after calling *{extension}; caller "
                               f"{'running' if caller.running else 'ended'}; device agent saw: "
                               + ", ".join(m.label for m in agent.messages() if m.method != "OPTIONS"))
            time.sleep(0.1)
        chan = _new_caller_channel(host, before)
        occ = Occupied(host=host, extension=extension, agent=agent, then=then, caller=caller,
                       channel=chan["channel"] if chan else None)
        with _occupied_lock:
            _occupied[key] = occ
        yield occ
    finally:
        with _occupied_lock:
            if _occupied.get(key) is occ:
                _occupied.pop(key, None)
        try:
            if caller is not None and caller.running:
                chan = occ.channel if occ else None
                if chan is None:
                    fresh = _new_caller_channel(host, set())
                    chan = fresh["channel"] if fresh and fresh.get("exten") == f"*{extension}" else None
                if chan:
                    _hangup(host, chan)
                caller.wait(5)
        except LabError:
            pass  # the PBX is gone (lab restarted?): stopping the agents is all that is left
        finally:
            if caller is not None:
                caller.stop()
            agent.stop()
            if not _keep_files():
                shutil.rmtree(workdir, ignore_errors=True)
